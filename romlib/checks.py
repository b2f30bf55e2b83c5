"""The bottom layer: value checks and the ranges they accept, each written once.

Every other module (the settings of :mod:`romlib.config`, the masks, the schedules, the CLI) checks a value with
these, so an error always names the bad value and what is accepted, in the same words. Plain Python: no torch.
"""
from __future__ import annotations

import math
import numbers

__all__ = ["need", "is_int", "is_real", "check_int", "check_number", "check_seed", "check_dilation", "quote",
           "MAX_SEED", "MAX_DILATION", "DILATION_ACCEPTED", "MIN_STEPS", "STEPS_ACCEPTED", "steps_ok",
           "space_timesteps", "parse_latent_steps"]

#: seeds are in [0, 2**63): the noise generators are seeded modulo 2**63, so a larger seed would
#: silently give the samples of a smaller one
MAX_SEED = 2**63 - 1
#: the largest mask dilation kernel (at 64×64 a 63×63 kernel already covers the frame from one pixel)
MAX_DILATION = 63
DILATION_ACCEPTED = f"an odd integer in 1..{MAX_DILATION} (1 = no dilation)"


def quote(text, limit: int = 80) -> str:
    """``repr(text)`` cut to at most ``limit`` characters (errors never echo a whole long text)."""
    r = repr(str(text))
    return r if len(r) <= limit else r[:limit - 4] + "...'"


def need(ok: bool, name: str, value, accepted: str) -> None:
    """Raise ``ValueError("name=value is out of range; accepted: ...")`` unless ``ok``."""
    if not ok:
        text = repr(value)
        text = text if len(text) <= 80 else text[:77] + "..."
        raise ValueError(f"{name}={text} is out of range; accepted: {accepted}")


def is_real(v) -> bool:
    """A finite real number (numpy scalars included; ``True``/``False`` are not)."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and type(v).__name__ != "bool_" and math.isfinite(v)


def is_int(v) -> bool:
    """An integer (numpy integers included; ``True``/``False`` are not)."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool) and type(v).__name__ != "bool_"


def check_int(name: str, value, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an ``int`` if it is an integer in [low, high]; else ``ValueError`` naming it
    (``name`` as the user wrote it, e.g. ``"--samples"`` or ``"sample"``)."""
    ok = is_int(value) and (low is None or value >= low) and (high is None or value <= high)
    accepted = ("an integer" + (f" in {low}..{high}" if low is not None and high is not None
                                else f" >= {low}" if low is not None else f" <= {high}" if high is not None else ""))
    need(ok, name, value, accepted)
    return int(value)


def check_number(name: str, value, low: float | None = None, high: float | None = None, *,
                 open_low: bool = False) -> float:
    """``value`` as a ``float`` if finite and in [low, high] (``(low, high]`` with ``open_low``)."""
    ok = is_real(value) and (low is None or (value > low if open_low else value >= low)) and (high is None or value <= high)
    bounds = ([f"{'>' if open_low else '>='} {low:g}"] if low is not None else []) + \
        ([f"<= {high:g}"] if high is not None else [])
    need(ok, name, value, " ".join(["a finite number", " and ".join(bounds)]).strip())
    return float(value)


def check_seed(name: str, value) -> int:
    """A seed: an integer in [0, 2**63) (:data:`MAX_SEED`)."""
    need(is_int(value) and 0 <= value <= MAX_SEED, name, value, "an integer in [0, 2**63)")
    return int(value)


def check_dilation(k, name: str = "dilation") -> int:
    """A mask dilation kernel side: an odd integer in 1..:data:`MAX_DILATION`."""
    need(is_int(k) and 1 <= k <= MAX_DILATION and k % 2 == 1, name, k, DILATION_ACCEPTED)
    return int(k)


# ---------------------------------------------------------------------------------------------- steps
#: the fewest steps a (respaced) diffusion can have: a schedule of one step has no posterior to sample
MIN_STEPS = 2


def space_timesteps(num_timesteps: int, section_counts: str | list[int]) -> set[int]:
    """Which of the original ``num_timesteps`` steps to keep.

    ``"100"`` keeps 100 evenly strided steps; ``"10,15,20"`` splits the process into three equal
    sections with that many steps each; ``"ddimN"`` uses DDIM's integer stride; ``"fast27"`` is
    GLIDE's upsampler schedule (``"10,10,3,2,2"`` with the noisiest step T−1 replaced by T−3).
    """
    if isinstance(section_counts, str):
        if section_counts.startswith("ddim"):
            desired = int(section_counts[len("ddim"):])
            for stride in range(1, num_timesteps):
                if len(range(0, num_timesteps, stride)) == desired:
                    return set(range(0, num_timesteps, stride))
            raise ValueError(f"cannot create exactly {desired} steps out of {num_timesteps} with an integer stride")
        if section_counts == "fast27":
            steps = space_timesteps(num_timesteps, "10,10,3,2,2")
            steps.remove(num_timesteps - 1)  # reduces artifacts from the noisiest step
            steps.add(num_timesteps - 3)
            return steps
        try:
            section_counts = [int(x) for x in section_counts.split(",")]
        except ValueError:
            raise ValueError(f"bad timestep respacing {section_counts!r}; expected e.g. '100', 'fast27', 'ddim25', '10,10,10'") from None
    size_per, extra = divmod(num_timesteps, len(section_counts))
    start, kept = 0, []
    for i, count in enumerate(section_counts):
        size = size_per + (1 if i < extra else 0)
        if size < count:
            raise ValueError(f"cannot divide a section of {size} steps into {count}")
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        kept += [start + round(stride * j) for j in range(count)]
        start += size
    return set(kept)


#: what a ``steps`` / ``upsample_steps`` value may be (the message of every check of one)
STEPS_ACCEPTED = "a step count >= 2 (e.g. 100), 'ddimN', 'fastN' or comma-separated counts (2 or more in all)"


def steps_ok(v) -> bool:
    """Whether ``v`` is a respacing of a 1000-step diffusion with at least :data:`MIN_STEPS` steps."""
    try:
        return len(space_timesteps(1000, str(v))) >= MIN_STEPS
    except (ValueError, TypeError, ZeroDivisionError):
        return False


def parse_latent_steps(steps: str | int, num_train_timesteps: int = 1000) -> tuple[str, int]:
    """A latent model's schedule: ``"N"`` → ``("dpm++", N)``, ``"ddimN"`` → ``("ddim", N)``; anything else is
    refused, naming what is accepted."""
    s = str(steps).strip()
    kind, n = ("ddim", s[4:]) if s.startswith("ddim") else ("dpm++", s)
    if not n.isdigit() or not 0 < int(n) <= num_train_timesteps:
        raise ValueError(f"steps={steps!r} is not a latent-model schedule; accepted: 'N' (DPM-Solver++(2M), N steps, "
                         f"e.g. '25') or 'ddimN' (DDIM, e.g. 'ddim50'), 1 <= N <= {num_train_timesteps}")
    return kind, int(n)
