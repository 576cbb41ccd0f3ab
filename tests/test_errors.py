"""Every error agent-sft raises on purpose survives pickling (a Ray collector's error reaches the driver
pickled): the same class, message, args and attributes, so the driver stops with the same one line and
exit code as a local run."""

from __future__ import annotations

import importlib
import inspect
import pickle
import pkgutil

import agent_sft
from agent_sft.errors import AgentSFTError, RunFailedError


def all_error_classes() -> list[type[AgentSFTError]]:
    """AgentSFTError and its subclasses, once every module of the package is imported."""
    for m in pkgutil.walk_packages(agent_sft.__path__, "agent_sft."):
        if m.name != "agent_sft.__main__":  # runs the CLI
            importlib.import_module(m.name)
    found, todo = [], [AgentSFTError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(c for c in cls.__subclasses__() if c.__module__.startswith("agent_sft.") and c not in found)
    return found


def an_instance(cls: type[AgentSFTError]) -> AgentSFTError:
    """`cls` built with a distinct string for every parameter of its constructor."""
    init = next((c.__init__ for c in cls.__mro__ if "__init__" in vars(c) and c.__module__.startswith("agent_sft.")), None)
    names = list(inspect.signature(init).parameters)[1:] if init else ["message"]
    return cls(*(f"{name} of {cls.__name__}" for name in names))


def test_every_error_keeps_its_class_message_and_attributes_through_pickle():
    classes = all_error_classes()
    names = {c.__name__ for c in classes}
    assert {"ServerFailingError", "ServerGoneError", "EnvFailedError", "ServeError", "OptionError"} <= names
    for cls in classes:
        err = an_instance(cls).with_hint(f"what to do about {cls.__name__}")
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is cls
        assert (str(back), back.args, vars(back)) == (str(err), err.args, vars(err)), cls
        assert back.hint == f"what to do about {cls.__name__}"
    assert issubclass(next(c for c in classes if c.__name__ == "ServerFailingError"), RunFailedError)
