"""Prompt templates, the two memory styles, and action parsing."""

from __future__ import annotations

import pytest

from agent_sft.prompts import (
    Conversation,
    PromptError,
    PromptTemplate,
    fallback_action,
    normalize_action,
    parse_action,
    resolve_template,
)

ADMISSIBLE = ["go to fridge 1", "open fridge 1", "take apple 1 from countertop 1", "look", "help"]


@pytest.mark.parametrize(
    "response, action, valid, reason",
    [
        ("<think>the fridge</think><action>open fridge 1</action>", "open fridge 1", True, ""),
        ("<think>x</think>\n<action>  Open   FRIDGE 1 \n</action>", "open fridge 1", True, ""),
        ("<THINK>x</THINK><Action>'look'</Action>", "look", True, ""),
        ('<think></think><action>"go to fridge 1"</action> done', "go to fridge 1", True, ""),
        ("I should open the fridge.", "", False, "missing <action>...</action> tag"),
        ("<think>x</think><action>open fridge 1", "", False, "unclosed <action> tag (no </action>)"),
        ("<think>x</think>open fridge 1</action>", "", False, "</action> without an opening <action> tag"),
        ("<think>x</think><action>  </action>", "", False, "empty <action> tag"),
        ("<think>x</think><action>fly to the moon</action>", "fly to the moon", False, "not admissible: 'fly to the moon'"),
        ("<think>x</think><action>look</action><action>help</action>", "look", False, "several <action> tags (2); the first was used"),
        ("<action>look</action>", "look", False, "missing <think>...</think> tag"),
        ("<think>unclosed <action>look</action>", "look", False, "missing <think>...</think> tag"),
    ],
)
def test_parse_action(response, action, valid, reason):
    assert tuple(parse_action(response, ADMISSIBLE)) == (action, valid, reason)


def test_parse_action_options():
    assert parse_action("<action>look</action>", ADMISSIBLE, require_think=False) == ("look", True, "")
    # without admissible actions (an env that lists none) any non-empty action is valid
    assert parse_action("<think></think><action>Dance</action>", None) == ("dance", True, "")
    assert parse_action("<think></think><action>Dance</action>", []).valid
    # the admissible spelling is what the env receives
    assert parse_action("<think></think><action>GO TO Fridge 1</action>", ["go to Fridge 1"]).action == "go to Fridge 1"


def test_normalize_and_fallback():
    assert normalize_action("  'Go  To\tDesk 1' ") == "go to desk 1"
    assert normalize_action("`look`") == "look"
    long = "I think I should go to the fridge and Open It"
    assert fallback_action(long) == long.lower()[-30:]


def test_builtin_alfworld_window_template_renders_verl_agent_prompt():
    t = resolve_template("alfworld/AlfredTWEnv", "window", None)
    assert t.source == "builtin:alfworld_window.txt"
    conv = Conversation(t, "window", history_length=2, max_steps=50)
    obs0 = "-= Welcome =- You are in the middle of a room.\n\nYour task is to: put a clean apple in fridge."
    first = conv.observe(obs0, ["go to fridge 1", "look", "help"])
    assert first == (0, 1)
    text = conv.messages[0]["content"]
    assert text.startswith("You are an expert agent operating in the ALFRED Embodied Environment.\nYour current observation is: -= Welcome")
    assert "Your admissible actions of the current situation are: ['go to fridge 1'\n 'look']." in text
    assert "<think> </think>" in text and "<action> </action>" in text and "Prior to this step" not in text
    assert conv.goal == "put a clean apple in fridge."
    conv.respond(obs0, "<think></think><action>go to fridge 1</action>", "go to fridge 1")
    conv.observe("You arrive at fridge 1.", ["open fridge 1"])
    conv.respond("You arrive at fridge 1.", "...", "open fridge 1")
    conv.observe("You open the fridge 1.", ["close fridge 1"])
    conv.respond("You open the fridge 1.", "...", "close fridge 1")
    window = conv.observe("You close the fridge 1.", ["open fridge 1"])
    text = conv.messages[-1]["content"]
    assert window == (6, 7) and conv.prompt(*window) == [conv.messages[6]]
    assert "Your task is to: put a clean apple in fridge." in text
    assert "Prior to this step, you have already taken 3 step(s). Below are the most recent 2 observations" in text
    assert "[Observation 2: 'You arrive at fridge 1.', Action 2: 'open fridge 1']\n[Observation 3: 'You open the fridge 1.', Action 3: 'close fridge 1']" in text
    assert "Observation 1:" not in text
    assert "You are now at step 4 and your current observation is: You close the fridge 1." in text


def test_history_length_zero_and_system_message():
    t = PromptTemplate.from_text("=== step ===\n{history_length}|{action_history}|{current_step}")
    conv = Conversation(t, "window", history_length=0, system="SYS")
    assert conv.observe("a", []) == (1, 2)
    conv.respond("a", "r", "x")
    w = conv.observe("b", [])
    assert conv.messages[-1]["content"] == "0||2"
    assert conv.prompt(*w) == [{"role": "system", "content": "SYS"}, {"role": "user", "content": "0||2"}]


def test_chat_style_grows_and_windows_start_after_system():
    t = resolve_template("alfworld", "chat", None)
    conv = Conversation(t, "chat", system="You are careful.")
    conv.goal = "heat some egg and put it in countertop."
    w1 = conv.observe("You are in a kitchen.", ["go to microwave 1"])
    assert w1 == (1, 2)
    assert "Your task is to: heat some egg and put it in countertop." in conv.messages[1]["content"]
    assert "Your current observation is: You are in a kitchen." in conv.messages[1]["content"]
    conv.respond("You are in a kitchen.", "<think></think><action>go to microwave 1</action>", "go to microwave 1")
    w2 = conv.observe("You arrive at microwave 1.", ["open microwave 1"])
    assert w2 == (1, 4)
    assert conv.messages[3]["content"] == (
        "Step 2. Your current observation is: You arrive at microwave 1.\n"
        "Your admissible actions of the current situation are: ['open microwave 1']."
    )
    assert [m["role"] for m in conv.prompt(*w2)] == ["system", "user", "assistant", "user"]
    conv.retract()
    assert conv.messages[-1]["role"] == "assistant"


def test_replaceable_template_file(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text(
        "My team's prompt. Anything above the first section is a comment.\n"
        "=== first ===\nTASK {task_description} // OBS {current_observation} // {{literal}}\n"
        "=== step ===\nstep {current_step}/{max_steps}: {current_observation} [{admissible_actions}]\n"
    )
    t = resolve_template("alfworld", "window", str(path))
    conv = Conversation(t, "window", max_steps=30)
    conv.goal = "find the key"
    conv.observe("dark room", ["look"])
    assert conv.messages[0]["content"] == "TASK find the key // OBS dark room // {literal}"
    conv.respond("dark room", "r", "look")
    conv.observe("still dark", ["look", "go north"])
    assert conv.messages[-1]["content"] == "step 2/30: still dark ['look'\n 'go north']"
    # a file without sections is used for every step
    single = tmp_path / "single.txt"
    single.write_text("{current_observation}\n")
    assert PromptTemplate.load(single).first == PromptTemplate.load(single).step == "{current_observation}"


@pytest.mark.parametrize(
    "text, message",
    [
        ("=== step ===\n{observation}", "unknown placeholder {observation}; allowed: task_description, current_observation"),
        ("=== step ===\n{}", "unknown placeholder {}"),
        ("=== step ===\n{current_observation", "expected '}' before end of string (write {{ and }} for literal braces)"),
        ("=== first ===\n{current_observation}", "has '=== first ===' but no '=== step ===' section"),
        ("=== step ===\na\n=== step ===\nb", "section '=== step ===' appears twice"),
    ],
)
def test_bad_templates_say_what_is_wrong(tmp_path, text, message):
    path = tmp_path / "t.txt"
    path.write_text(text)
    with pytest.raises(PromptError) as e:
        PromptTemplate.load(path)
    assert message in str(e.value) and str(path) in str(e.value)


def test_missing_template_file_and_unknown_env_family(tmp_path):
    with pytest.raises(PromptError, match="prompt.template: cannot read .*nope.txt"):
        resolve_template("alfworld", "window", str(tmp_path / "nope.txt"))
    assert PromptTemplate.builtin("nosuch-family/SomeEnv", "chat").source == "builtin:generic_chat.txt"
    assert PromptTemplate.builtin("webshop/WebShopEnv", "chat").source == "builtin:webshop_chat.txt"


@pytest.mark.parametrize("style", ["window", "chat"])
@pytest.mark.parametrize("env", ["alfworld", "babyai", "frozenlake", "gymnasium", "http", "taxi", "textarena",
                                 "textworld", "webshop", "nosuch-family/SomeEnv"])
def test_tool_call_prompts_ask_for_a_call_and_never_for_tags(env, style):
    text = PromptTemplate.builtin(env, style)
    tools = resolve_template(env, style, None, "tools")
    assert tools.source == text.source.replace(".txt", "_tools.txt")
    fields = dict.fromkeys(
        ("task_description", "current_observation", "admissible_actions", "action_history"), "x"
    ) | {"step_count": 1, "current_step": 2, "history_length": 2, "max_steps": 50}
    for first in (True, False):
        assert "<action>" in text.render(first, **fields) or not first  # text mode asks for tags as it did
        shown = tools.render(first, **fields)
        assert "<think>" not in shown and "<action>" not in shown and "tags" not in shown
        assert ("by calling" in shown and "one tool call per turn" in shown) or (style == "chat" and not first)
    with pytest.raises(PromptError, match="prompt.actions: 'json' is not one of text, tools"):
        PromptTemplate.builtin(env, style, "json")
