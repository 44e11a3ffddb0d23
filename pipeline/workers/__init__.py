"""Worker modules run inside a tool's own environment (`python -m pipeline.workers.X`).

They import only the standard library and that tool, never the orchestrator's packages, and talk
to it through a request JSON file in and a result JSON file out.
"""
