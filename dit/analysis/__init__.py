"""Analysis: model size and forward GFLOPs counted as the DiT paper reports them (flops.py)."""
