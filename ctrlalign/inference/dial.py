"""The alignment dial: one path from a request to a generation row.

A request comes from a CLI line, a Python call or an HTTP body; whichever, ``dial_row``
parses its alpha, defaults its preference to the run's, checks the combination against the
run (``check_dial``, from ``run.yaml`` alone, so the CLI can refuse before loading a model),
checks the control names and sets the row's own ``max_new_tokens``.

A CLM run mixes its unaligned and aligned streams, a MEET run two of its controls
(``preference`` and ``against``); logits = (1 - alpha) * low + alpha * high at every step
(``generation.alpha_row``). Messages speak in CLI flags; ``DialError.field`` names the
request field at fault, so a server can report it as the HTTP ``param``.

The preference may be a blend of several (``concise+warm``, ``concise=1+warm=0.5``, or a
``{name: weight}`` mapping), composed natively by the control (``compose="native"``, see
``controls.base.Blend``) or by mixing the logits of one stream per preference, the
weights scaled to sum to 1 (``compose="logits"``: any kind, at one stream per part).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ctrlalign.inference.generation import Message, Row, alpha_row, blend_streams
from ctrlalign.model.controls import Blend, Control
from ctrlalign.model.rundir import Run, default_preference

#: how a blend of preferences is composed (see the module docstring)
COMPOSE_MODES = ("native", "logits")


class DialError(ValueError):
    """A request the dial refuses, naming the field at fault when there is one."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class DialRequest:
    """What any caller asks for: a prompt, and optionally a control, the dial and a cap."""

    prompt: str | Sequence[Message]
    #: the control to answer under (the side alpha moves towards), or a blend of several
    #: (``a+b``, ``a=1+b=0.5``, ``{name: weight}``); None: the run's default
    preference: str | Mapping[str, float] | Blend | None = None
    #: MEET run: the control alpha moves away from
    against: str | None = None
    #: the dial, as given (text, number); None: 1, the aligned model or plain ``preference``
    alpha: object = None
    #: this row's own cap on new tokens; None: the generation config's
    max_new_tokens: int | None = None
    #: how a blend is composed: "native" (by the control) or "logits" (one stream each)
    compose: str = "native"


def parse_preference(
    value: str | Mapping[str, float] | Blend | None, known: Sequence[str]
) -> str | Blend | None:
    """A preference name, or a blend when ``value`` is one (text with ``+``/``=``, or a
    mapping); a name the run knows is always that name. A blend of one preference at
    weight 1 is that preference."""
    if isinstance(value, str) and value not in known and ("+" in value or "=" in value):
        try:
            value = Blend.parse(value)
        except ValueError as err:
            raise DialError(str(err), "preference") from None
    elif isinstance(value, Mapping):
        try:
            value = Blend.of(value)
        except ValueError as err:
            raise DialError(f"preference: {err}", "preference") from None
    if isinstance(value, Blend) and value.parts[0][1] == 1 and len(value.parts) == 1:
        return value.names[0]
    return value


def parse_alpha(value: object) -> float:
    """A finite number; anything else is a clear error (argparse shows it as usage error)."""
    if isinstance(value, bool):
        raise DialError(f"alpha must be a number, got {value!r}", "alpha")
    try:
        alpha = float(value)
    except (TypeError, ValueError):
        raise DialError(f"alpha must be a number, got {value!r}", "alpha") from None
    if not math.isfinite(alpha):
        raise DialError(f"alpha must be a finite number, got {value!r}", "alpha")
    return alpha


def parse_alphas(text: str) -> list[float]:
    """Comma-separated alphas, e.g. ``-1,0,0.5,1,1.5,2``."""
    alphas = [parse_alpha(item.strip()) for item in text.split(",") if item.strip()]
    if not alphas:
        raise DialError("no alphas given: pass e.g. --alphas -1,0,0.5,1,1.5,2")
    repeated = sorted({a for a in alphas if alphas.count(a) > 1})
    if repeated:
        raise DialError(f"alphas given more than once: {repeated}")
    return alphas


def check_dial(
    info: dict, alpha: float | None, preference: str | None, against: str | None
) -> None:
    """Reject flag combinations that do not fit the run, from its ``run.yaml`` alone."""
    if info.get("clm"):
        if preference is not None:
            raise DialError(
                "this is a CLM run: it has no preferences, so no --preference; "
                "its dial is --alpha (0 = base model, 1 = aligned)"
            )
        if against is not None:
            raise DialError("--against mixes two MEET controls; a CLM run takes --alpha alone")
        return
    if against is not None:
        if not info.get("control"):
            raise DialError(f"--against needs a run with controls; this one is {info['method']}")
        if alpha is None:
            raise DialError("--against needs --alpha (1 = plain --preference)")
        if against == preference:
            raise DialError(f"--against {against!r} is the --preference itself")
    elif alpha is not None:
        raise DialError("--alpha needs a CLM run, or on a MEET run --preference GOOD --against BAD")


def _check_names(control: Control, name: str | Blend, request: DialRequest) -> None:
    """Every name known; a blend composable the way asked and not holding ``against``."""
    if not isinstance(name, Blend):
        control.index(name)
        return
    if request.against in name.names:
        raise ValueError(f"--against {request.against!r} is part of the blend {name}")
    if request.compose == "native":
        control.check_blend(name)  # the names too
    else:
        for part in name.names:
            control.index(part)


@dataclass(frozen=True)
class Dial:
    """A request resolved against its run, once: the preference parsed and defaulted to
    the run's, alpha parsed, the combination checked."""

    request: DialRequest
    #: the preference (a name or a blend) the row answers under; None: a run without controls
    preference: str | Blend | None
    #: the dial; None when the request set none (1: the aligned model, plain ``preference``)
    alpha: float | None

    @property
    def label(self) -> str | Mapping[str, float] | Blend | None:
        """The preference as the request gave it (the run's default when it gave none),
        for output that names what answered."""
        asked = self.request.preference
        return asked if asked is not None else self.preference


def resolve(info: dict, request: DialRequest) -> Dial:
    """``request`` checked against a run's ``run.yaml`` alone (so a CLI can refuse before
    loading a model), or a ``DialError`` naming the field at fault."""
    alpha = None if request.alpha is None else parse_alpha(request.alpha)
    if request.compose not in COMPOSE_MODES:
        raise DialError(
            f"compose must be one of {', '.join(COMPOSE_MODES)}, got {request.compose!r}",
            "compose",
        )
    preference = parse_preference(request.preference, info.get("preferences") or [])
    if preference is not None and not info.get("control") and not info.get("clm"):
        raise DialError(f"this run ({info.get('method')}) has no preferences", "preference")
    if preference is None:
        preference = default_preference(info)
    check_dial(info, alpha, preference, request.against)
    return Dial(request, preference, alpha)


def dial_row(run: Run, request: DialRequest | Dial) -> Row:
    """The generation row for one request (resolved here unless it already is), or a
    ``DialError`` naming what is wrong."""
    dial = request if isinstance(request, Dial) else resolve(run.info, request)
    request = dial.request
    control = run.model.control
    if control is not None:
        for field, name in (("preference", dial.preference), ("against", request.against)):
            if name is not None:
                try:
                    _check_names(control, name, request)
                except ValueError as err:
                    raise DialError(str(err), field) from None
    high = blend_streams(dial.preference, request.compose)
    alpha = 1.0 if dial.alpha is None else dial.alpha
    return alpha_row(
        request.prompt, alpha, dial.preference, request.against, high, request.max_new_tokens
    )
