"""The registered task catalogue, installed as ``t5pre.tasks``. Importing it registers every task."""
