"""Tests of spire_pqc.plugin."""
