"""See DESIGN.md §7."""
