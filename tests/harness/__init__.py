"""The test harness around scripts/agent_chat.py: what the tests, scripts/cluster.py and
bench/cluster.py need, and an example should not carry.

* ``load_agent_chat()``: the example as a module (scripts/ is not a package), loaded once.
* ``chat``: ``ObservedChat``, the example's conversation with an ``on_step`` observer
  (code-free ``StepEvent``s carrying the chain id), optionally through an ``AddressPool``.
* ``failover``: ``AddressPool``, one IdP behind several addresses (round-robin; an
  address that refuses the connection is dropped), as a urllib handler.
* ``person``: a headless person standing in for ``webbrowser.open`` in ``--interactive``.
* ``inspect_chain``: ``python -m tests.harness.inspect_chain <chain id>``: what the
  database holds of a chain, as JSON (scripts/cluster.py runs it in the cluster's
  environment).

The example imports nothing from here; the harness imports the example.
"""

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
AGENT_CHAT = REPO / "scripts" / "agent_chat.py"


def load_agent_chat():
    """scripts/agent_chat.py as the module ``agent_chat`` (one copy: what a test patches, the harness sees)."""
    module = sys.modules.get("agent_chat")
    if module is None:
        spec = importlib.util.spec_from_file_location("agent_chat", AGENT_CHAT)
        module = importlib.util.module_from_spec(spec)
        sys.modules["agent_chat"] = module  # dataclasses resolve their annotations through it
        spec.loader.exec_module(module)
    return module
