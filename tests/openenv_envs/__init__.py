"""OpenEnv environments written with OpenEnv's own server classes, run from its virtualenv
(tests/fixtures_openenv.py): `python -m openenv_envs.guess --port N` and `python -m openenv_envs.room --port N`."""
