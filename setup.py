"""setup.py exists for cffi_modules: the C core is compiled by cffi in API mode."""
from setuptools import setup

setup(
    cffi_modules=["src/prack/_native/build.py:ffibuilder"],
)
