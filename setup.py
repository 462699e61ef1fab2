"""Only the C kernel lives here; everything else about the package is in pyproject.toml.

optional=True: a machine without a C compiler still installs, and kernels/area_resize.py then
uses its NumPy version of the same arithmetic (identical pixels, slower).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "curastream.kernels._area_resize",
            sources=["kernels/area_resize.c"],
            extra_compile_args=["-O3"],
            optional=True,
        )
    ]
)
