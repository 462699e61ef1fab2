"""Columns built without pa.array: the same arrays, and no pandas import in a run."""

from __future__ import annotations

import subprocess
import sys

import pyarrow as pa
import pytest

from curastream.engine.columns import column

CASES = [
    (pa.string(), ["a", None, "é€😀", "", "x" * 1000]),
    (pa.string(), []),
    (pa.string(), [None, None]),
    (pa.bool_(), [True, None, False, True, True, False, False, False, True]),
    (pa.int8(), [1, -128, None, 127]),
    (pa.int32(), [0, 2**31 - 1, None]),
    (pa.int64(), [None, -(2**63), 5]),
    (pa.uint64(), [2**64 - 1, 0, None]),
    (pa.float32(), [0.1, None, float("inf"), -3.5]),
    (pa.float64(), [1e300, None]),
    (pa.binary(), [b"\xff\xd8", None, b"", b"x" * 100000]),
    (pa.binary(), []),
    (pa.large_binary(), [None, b"abc", b"\x00" * 7]),
    (pa.list_(pa.int32()), [[1, 2], None]),  # not a flat type: falls back to pa.array
]


@pytest.mark.parametrize("typ,values", CASES, ids=[f"{t}-{len(v)}" for t, v in CASES])
def test_column_equals_pa_array(typ, values):
    got = column(values, typ)
    got.validate(full=True)
    assert got.type == typ
    assert got.equals(pa.array(values, typ))
    assert got.to_pylist() == pa.array(values, typ).to_pylist()


@pytest.mark.parametrize("typ,bad", [(pa.int8(), [300]), (pa.uint64(), [-1]), (pa.string(), ["\udcff"])])
def test_column_refuses_what_pa_array_refuses(typ, bad):
    with pytest.raises((OverflowError, ValueError, UnicodeEncodeError, pa.ArrowInvalid)):
        pa.array(bad, typ)
    with pytest.raises((OverflowError, ValueError, UnicodeEncodeError)):
        column(bad, typ)


def test_an_image_run_does_not_import_pandas(tmp_path):
    pytest.importorskip("pandas")  # the point is moot where pandas is not installed
    code = f"""
import sys
from curastream import ImageRunConfig, run_images
from curastream.samples import make_sample_images
make_sample_images({str(tmp_path / 'in')!r})
run_images(ImageRunConfig(sources=[{str(tmp_path / 'in')!r}], output={str(tmp_path / 'out')!r}, progress=False))
print('pandas' in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"
    assert (tmp_path / "out" / "_curastream" / "rejects.parquet").exists()
