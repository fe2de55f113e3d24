"""Accessibility tree -> state text, and our action strings <-> BrowserGym high-level actions.

The real WebArena env (``real_env.py``) and the BrowserGym log importer (``importers.py``) both
go through these functions, so a real page, a logged experiment and the synthetic WebArena env
all share one state format: one element per line, indented by depth with tabs::

    RootWebArea 'Test shop' focused url='http://127.0.0.1:8000/'
    \t[13] link 'Next page'
    \t[15] textbox 'Search' value='lamp' focused
    \t[16] combobox 'Colour' value='Red' hasPopup='menu'
    \t\t[18] option 'Red' selected
    \tStaticText 'Nothing yet'

``[bid]`` is BrowserGym's element id (the ``bid`` HTML attribute it marks elements with): the
ref that ``click [13]`` or ``type [15] "lamp"`` names. Text nodes carry no bid. Nothing here
imports BrowserGym or Playwright; the parser of BrowserGym actions is imported lazily.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

from dreamgym_env.domains.actions import ParsedAction

#: Roles never printed (their children still are).
SKIPPED_ROLES = frozenset({"InlineTextBox", "LineBreak", "none", "presentation", "ignored"})
#: Roles printed only when they have a name or a shown property (WebArena's own rule, plus
#: the wrappers that Chromium adds around native widgets).
STRUCTURAL_ROLES = frozenset({
    "generic", "group", "img", "list", "listitem", "strong", "emphasis", "paragraph", "banner",
    "navigation", "Section", "section", "LabelText", "Legend", "MenuListPopup", "form",
    "contentinfo", "main", "complementary", "region", "article", "figure", "separator",
    "DescriptionList", "DescriptionListTerm", "DescriptionListDetail", "superscript", "subscript",
    "time", "mark", "code", "blockquote", "caption", "rowgroup", "table", "row", "Abbr", "Ruby",
})
#: Boolean properties printed as a bare word when true.
FLAG_PROPERTIES = ("focused", "checked", "selected", "expanded", "pressed", "disabled", "required",
                   "modal", "multiselectable", "busy")
#: Properties printed as ``name='value'`` (when not empty/false).
VALUE_PROPERTIES = ("hasPopup", "autocomplete", "valuetext")
#: Scroll distance of ``scroll [up|down]`` in pixels (WebArena scrolls one viewport height).
SCROLL_PIXELS = 720


def _prop_value(prop: Mapping[str, Any]) -> Any:
    value = prop.get("value")
    return value.get("value") if isinstance(value, Mapping) else None


def _node_line(node: Mapping[str, Any], *, is_root: bool) -> tuple[str, str]:
    """(line without indentation, its text) of one AXTree node; line is "" when not printed."""
    role = (node.get("role") or {}).get("value") or ""
    if node.get("ignored") or role in SKIPPED_ROLES or not role:
        return "", ""
    name = str((node.get("name") or {}).get("value") or "").strip()
    value = (node.get("value") or {}).get("value") if isinstance(node.get("value"), Mapping) else None
    attrs: list[str] = []
    url = ""
    for prop in node.get("properties", []) or []:
        pname, pvalue = prop.get("name"), _prop_value(prop)
        if pvalue is None:
            continue
        if pname in FLAG_PROPERTIES:
            if pvalue is True or pvalue == "true":
                attrs.append(pname)
            elif pname == "checked" and pvalue == "mixed":
                attrs.append("checked='mixed'")
        elif pname in VALUE_PROPERTIES and pvalue not in ("", False, "false", "none"):
            attrs.append(f"{pname}={str(pvalue)!r}")
        elif pname == "url" and is_root:
            url = str(pvalue)
    if url:
        attrs.append(f"url={url!r}")
    bid = node.get("browsergym_id")
    if not name and value in (None, "") and not attrs and bid is None:
        return "", ""
    if not name and value in (None, "") and not attrs and role in STRUCTURAL_ROLES:
        return "", ""
    line = f"{role} {name!r}"
    if bid is not None:
        line = f"[{bid}] {line}"
    if value not in (None, ""):
        line += f" value={str(value)!r}"
    if attrs:
        line += " " + " ".join(attrs)
    return line, f"{name}\n{value}" if value not in (None, "") else name


def axtree_to_text(
    axtree: Mapping[str, Any],
    *,
    extra_properties: Mapping[str, Mapping[str, Any]] | None = None,
    visible_only: bool = False,
    max_lines: int | None = None,
) -> str:
    """Serialise a BrowserGym ``axtree_object`` (CDP ``Accessibility.getFullAXTree`` nodes
    with ``browsergym_id``) into state text, one element per line.

    Args:
        axtree: ``obs["axtree_object"]`` of a BrowserGym observation.
        extra_properties: ``obs["extra_element_properties"]``, needed for ``visible_only``.
        visible_only: drop elements whose visibility BrowserGym measured below 0.5 (and
            everything under them).
        max_lines: keep at most this many lines (the rest is cut with a ``…`` line).

    Returns:
        The state text (empty when the tree has no printable node).
    """
    nodes = axtree.get("nodes") or []
    if not nodes:
        return ""
    by_id = {node["nodeId"]: node for node in nodes}
    lines: list[str] = []
    # Iterative DFS (real pages are deep enough to hit the recursion limit).
    stack: list[tuple[Mapping[str, Any], int, str, bool]] = [(nodes[0], 0, "", True)]
    seen: set[str] = set()
    while stack:
        node, depth, parent_name, is_root = stack.pop()
        if node["nodeId"] in seen:
            continue
        seen.add(node["nodeId"])
        bid = node.get("browsergym_id")
        if (visible_only and bid is not None and extra_properties is not None
                and float((extra_properties.get(bid) or {}).get("visibility", 1.0)) < 0.5):
            continue
        line, name = _node_line(node, is_root=is_root)
        role = (node.get("role") or {}).get("value")
        if line and role == "StaticText" and name and name in parent_name:
            line = ""  # the text is already in its parent's name or value
        child_depth, child_parent_name = depth, parent_name
        if line:
            lines.append("\t" * depth + line)
            child_depth, child_parent_name = depth + 1, name
        children = [by_id[c] for c in node.get("childIds", []) or [] if c in by_id and c != node["nodeId"]]
        for child in reversed(children):
            stack.append((child, child_depth, child_parent_name, False))
    if max_lines is not None and len(lines) > max_lines:
        lines = lines[:max_lines] + ["…"]
    return "\n".join(lines)


def state_from_observation(
    obs: Mapping[str, Any], *, visible_only: bool = False, max_lines: int | None = None
) -> str:
    """The state text of a BrowserGym observation dict: its accessibility tree, preceded by a
    ``Tabs:`` line when more than one tab is open."""
    state = axtree_to_text(
        obs.get("axtree_object") or {}, extra_properties=obs.get("extra_element_properties"),
        visible_only=visible_only, max_lines=max_lines,
    )
    titles = list(obs.get("open_pages_titles") or ())
    if len(titles) > 1:
        active = obs.get("active_page_index")
        try:
            active_index = int(active[0]) if active is not None and not isinstance(active, int) else int(active or 0)
        except (TypeError, ValueError, IndexError):
            active_index = 0
        tabs = " | ".join(
            f"{i} {t!r}{' (current)' if i == active_index else ''}" for i, t in enumerate(titles)
        )
        state = f"Tabs: {tabs}\n{state}"
    return state


# --------------------------------------------------------------------- actions
def to_browsergym_action(action: ParsedAction, *, scroll_pixels: int = SCROLL_PIXELS) -> str:
    """The BrowserGym high-level action (python-call syntax) for one of our parsed actions.

    ``stop [answer]`` becomes ``send_msg_to_user(answer)``: WebArena's evaluator reads the
    answer from the last assistant chat message.

    Raises:
        ValueError: for a verb without a BrowserGym equivalent.
    """
    verb, args = action.verb, action.args
    ref = args.get("ref", "")
    if verb == "click":
        return f"click({ref!r})"
    if verb == "hover":
        return f"hover({ref!r})"
    if verb == "type":
        code = f"fill({ref!r}, {args['text']!r})"
        return code + (f"\npress({ref!r}, 'Enter')" if args.get("enter") else "")
    if verb == "select":
        return f"select_option({ref!r}, {args['text']!r})"
    if verb == "press":
        return f"keyboard_press({_normalise_keys(args['value'])!r})"
    if verb == "scroll":
        return f"scroll(0, {scroll_pixels if args['value'] == 'down' else -scroll_pixels})"
    if verb == "goto":
        return f"goto({args['value']!r})"
    if verb == "go_back":
        return "go_back()"
    if verb == "go_forward":
        return "go_forward()"
    if verb == "new_tab":
        return "new_tab()"
    if verb == "tab_focus":
        return f"tab_focus({int(args['value'])})"
    if verb == "close_tab":
        return "tab_close()"
    if verb == "stop":
        return f"send_msg_to_user({args.get('value', '')!r})"
    raise ValueError(f"action verb {verb!r} has no BrowserGym equivalent")


_KEY_ALIASES = {"ctrl": "Control", "control": "Control", "cmd": "Meta", "meta": "Meta",
                "alt": "Alt", "shift": "Shift", "enter": "Enter", "return": "Enter",
                "esc": "Escape", "escape": "Escape", "tab": "Tab", "backspace": "Backspace",
                "delete": "Delete", "space": "Space", "up": "ArrowUp", "down": "ArrowDown",
                "left": "ArrowLeft", "right": "ArrowRight", "pageup": "PageUp", "pagedown": "PageDown",
                "home": "Home", "end": "End"}


def _normalise_keys(keys: str) -> str:
    """WebArena writes ``press [ctrl+a]``; Playwright wants ``Control+a``."""
    parts = [p.strip() for p in keys.split("+")]
    return "+".join(_KEY_ALIASES.get(p.lower(), p) for p in parts if p)


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def parse_browsergym_calls(code: str) -> list[tuple[str, list[Any]]]:
    """The ``(function, args)`` calls of a BrowserGym high-level action string, parsed with
    BrowserGym's own parser (``browsergym.core.action.parsers``).

    Raises:
        ImportError: when browsergym-core is not installed.
        ValueError: when the string is not a sequence of calls.
    """
    from browsergym.core.action.parsers import NamedArgument, highlevel_action_parser

    try:
        calls = highlevel_action_parser.parse_string(code, parse_all=True).as_list()
    except Exception as exc:  # pyparsing.ParseException and literal_eval errors
        raise ValueError(f"not a BrowserGym action: {code[:80]!r} ({exc})") from exc
    out = []
    for name, raw_args in calls:
        args = [a.value if isinstance(a, NamedArgument) else a for a in raw_args]
        out.append((name, args))
    return out


def from_browsergym_action(code: str) -> str | None:
    """Our action string for a BrowserGym high-level action, or None when it has none
    (``noop()``, coordinate actions, several unrelated calls...).

    ``fill(b, t)`` followed by ``press(b, 'Enter')`` becomes ``type [b] "t" enter``;
    ``send_msg_to_user(a)`` and ``report_infeasible(r)`` become ``stop [a]`` / ``stop [N/A]``.
    """
    try:
        calls = parse_browsergym_calls(code)
    except ValueError:
        return None
    calls = [c for c in calls if c[0] != "noop"] or calls
    if len(calls) == 2 and calls[0][0] == "fill" and calls[1][0] == "press" and len(calls[1][1]) >= 2:
        (_, fill_args), (_, press_args) = calls
        if len(fill_args) >= 2 and str(press_args[0]) == str(fill_args[0]) and str(press_args[1]) == "Enter":
            return f"type [{fill_args[0]}] {_quote(str(fill_args[1]))} enter"
        return None
    if len(calls) != 1:
        return None
    name, args = calls[0]
    try:
        return _single_call(name, args)
    except (IndexError, TypeError, ValueError):
        return None


def _single_call(name: str, args: Sequence[Any]) -> str | None:
    if name in ("click", "hover") and args:
        return f"{name} [{args[0]}]"
    if name == "fill" and len(args) >= 2:
        return f"type [{args[0]}] {_quote(str(args[1]))}"
    if name == "select_option" and len(args) >= 2:
        option = args[1][0] if isinstance(args[1], list) and len(args[1]) == 1 else args[1]
        return f"select [{args[0]}] {_quote(str(option))}" if isinstance(option, str) else None
    if name == "keyboard_press" and args:
        return f"press [{args[0]}]"
    if name == "press" and len(args) >= 2:
        return f"press [{args[1]}]"  # our press has no element: the key goes to the page
    if name == "scroll" and len(args) >= 2:
        dy = float(args[1])
        return "scroll [down]" if dy > 0 else "scroll [up]" if dy < 0 else None
    if name == "goto" and args:
        return f"goto [{args[0]}]"
    if name in ("go_back", "go_forward", "new_tab"):
        return name
    if name == "tab_focus" and args:
        return f"tab_focus [{int(args[0])}]"
    if name == "tab_close":
        return "close_tab"
    if name == "send_msg_to_user":
        return f"stop [{args[0]}]" if args and str(args[0]) else "stop"
    if name == "report_infeasible":
        return "stop [N/A]"
    return None


__all__ = [
    "axtree_to_text", "state_from_observation", "to_browsergym_action", "from_browsergym_action",
    "parse_browsergym_calls", "SCROLL_PIXELS",
]
