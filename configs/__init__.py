"""mmengine new-style (pure-Python) configs, one per task and study; installed as ``rs_transfer.configs``."""
