"""The workload SDK: Workload API client and live hybrid sources (docs/workload-api.md)."""
