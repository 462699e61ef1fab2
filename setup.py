"""Only the C extensions live here; everything else about the package is in pyproject.toml.

optional=True: a machine without a C compiler still installs, and the Python fallbacks take
over with identical results, slower (kernels/area_resize.py: the same arithmetic in NumPy;
stream/images/jpeg.py: regular expressions for the JPEG marker search).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "curastream.kernels._area_resize",
            sources=["kernels/area_resize.c"],
            extra_compile_args=["-O3"],
            optional=True,
        ),
        Extension(
            "curastream.images._jpeg_markers",
            sources=["stream/images/jpeg_markers.c"],
            extra_compile_args=["-O3"],
            optional=True,
        ),
    ]
)
