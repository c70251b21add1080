"""The run record: summary.json (``RunSummary``, ``Status``), its read/write and rebuild, the run lock, the wandb login."""
