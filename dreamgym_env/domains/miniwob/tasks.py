"""The MiniWoB++ task families of the MiniWoB domain and their action grammar."""

from __future__ import annotations

from dataclasses import dataclass

from dreamgym_env.domains.base import Task

#: The verbs MiniWoB agents use (``type [ref] "text" enter`` types then presses Enter).
MINIWOB_VERBS = ("click", "type", "select", "press")


@dataclass(frozen=True)
class Family:
    """One MiniWoB++ task family: its page, utterance template and a real example."""

    task_id: str
    template: str
    example: str
    description: str
    #: milliseconds to let the page settle after ``type``/``press`` (timers, menus)
    settle_ms: int = 0


FAMILIES: tuple[Family, ...] = (
    Family("click-test", "Click the button.", "Click the button.",
           "one button; click it"),
    Family("click-test-2", "Click button {ONE|TWO}.", "Click button ONE.",
           "two buttons ONE and TWO; click the named one"),
    Family("click-button", 'Click on the "{label}" button.', 'Click on the "okay" button.',
           "text, fields and buttons; click the button with the given label"),
    Family("click-button-sequence", "Click button ONE, then click button TWO.",
           "Click button ONE, then click button TWO.", "click ONE, then TWO"),
    Family("click-link", 'Click on the link "{word}".', 'Click on the link "Eget".',
           "a paragraph whose words are links; click the named link"),
    Family("click-checkboxes", "Select {names} and click Submit.", "Select HF2 and click Submit.",
           "2-6 labelled checkboxes; check exactly the named ones (or nothing), then Submit"),
    Family("click-option", "Select {name} and click Submit.", "Select AU and click Submit.",
           "2-6 labelled radio buttons; choose the named one, then Submit"),
    Family("click-tab", "Click on Tab #{n}.", "Click on Tab #2.",
           "three jQuery UI tabs; click the named tab"),
    Family("click-dialog", 'Close the dialog box by clicking the "x".',
           'Close the dialog box by clicking the "x".', "a dialog; close it with its x button"),
    Family("click-dialog-2", 'Click the button in the dialog box labeled "{Cancel|OK|x}".',
           'Click the button in the dialog box labeled "Cancel".',
           "a dialog with Cancel, OK and x (Close); click the named one"),
    Family("click-collapsible", "Expand the section below and click submit.",
           "Expand the section below and click submit.",
           "a collapsed accordion section; expand it, then Submit"),
    Family("click-widget", 'Click on a "{radio|checkbox|text|textarea|button}" widget.',
           'Click on a "textarea" widget.', "five random widgets; click one of the named kind"),
    Family("enter-text", 'Enter "{name}" into the text field and press Submit.',
           'Enter "Agustina" into the text field and press Submit.',
           "a text field; type the name, then Submit"),
    Family("enter-password", 'Enter the password "{pw}" into both text fields and press submit.',
           'Enter the password "yA" into both text fields and press submit.',
           "password and verify fields; type the password in both, then Submit"),
    Family("focus-text", "Focus into the textbox.", "Focus into the textbox.",
           "one text field; focus it"),
    Family("login-user",
           'Enter the username "{user}" and the password "{pw}" into the text fields and press login.',
           'Enter the username "karrie" and the password "AU" into the text fields and press login.',
           "username and password fields; fill both, then Login"),
    Family("choose-list", "Select {item} from the list and click Submit.",
           "Select Helli from the list and click Submit.",
           "a drop-down list of names or countries; select the item, then Submit"),
    Family("use-autocomplete", 'Enter an item that starts with "{prefix}"[ and ends with "{suffix}"].',
           'Enter an item that starts with "An" and ends with "ica".',
           "a country field with an autocomplete menu; enter a matching country, then Submit",
           settle_ms=30),
    Family("email-inbox",
           "Find the email by {sender} and {reply to them with the text \"...\"|forward that email to "
           "{name}|click the trash icon to delete it|click the star icon to mark it as important}.",
           "Find the email by Audrey and forward that email to Hedy.",
           "an inbox; open, reply to, forward, delete or star the email of the named sender"),
)

FAMILY_BY_ID: dict[str, Family] = {f.task_id: f for f in FAMILIES}
TASK_IDS: tuple[str, ...] = tuple(FAMILY_BY_ID)


def load_miniwob_tasks(task_ids: list[str] | tuple[str, ...] | None = None) -> list[Task]:
    """The families as :class:`Task` objects: the goal is a real example utterance, the
    metadata holds the template and a description (the real env draws concrete goals)."""
    chosen = TASK_IDS if task_ids is None else tuple(task_ids)
    unknown = [t for t in chosen if t not in FAMILY_BY_ID]
    if unknown:
        from dreamgym_env.errors import UnknownTaskError

        raise UnknownTaskError(unknown[0], TASK_IDS, "miniwob")
    return [
        Task(f.task_id, f.example, {"template": f.template, "description": f.description, "subdomain": f.task_id})
        for f in (FAMILY_BY_ID[t] for t in chosen)
    ]
