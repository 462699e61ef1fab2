"""``--where``: a SQL condition over the index columns, evaluated by DuckDB (the ``export`` extra),
which keeps the row order and the column types: only the positions of matching rows come back."""

from __future__ import annotations

import pyarrow as pa


def select(table: pa.Table, where: str) -> pa.Table:
    try:
        import duckdb
    except ImportError as e:
        raise ValueError("--where needs DuckDB: pip install 'curastream[export]'") from e
    order = pa.array(range(table.num_rows), pa.int64())
    # embeddings and bytes are not what one filters on, and copying them into DuckDB costs
    cols = [n for n, t in zip(table.column_names, table.schema.types)
            if not (pa.types.is_binary(t) or pa.types.is_large_binary(t))]
    samples = table.select(cols).append_column("__row", order)
    con = duckdb.connect()
    try:
        con.register("samples", samples)
        # a condition from the command line reads the index, not the machine's files
        con.execute("SET enable_external_access = false")
        try:
            picked = con.execute(f"SELECT __row FROM samples WHERE ({where}) ORDER BY __row").fetchall()
        except duckdb.Error as e:
            first = str(e).strip().splitlines()[0]
            raise ValueError(f"--where {where!r}: {first} (columns: {', '.join(cols)})") from None
    finally:
        con.close()
    return table.take(pa.array([r[0] for r in picked], pa.int64()))
