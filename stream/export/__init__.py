"""``curastream export``: a finished output (a clip tree or image shards) as training shards:
WebDataset tars (with a Parquet beside each) or a Parquet index, selected with ``--where``."""

from curastream.export.config import ExportConfig
from curastream.export.run import run_export

__all__ = ["ExportConfig", "run_export"]
