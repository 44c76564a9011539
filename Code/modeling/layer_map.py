"""Layer maps: which student hidden state is matched to which teacher hidden state.

Hidden-state indices follow Hugging Face `output_hidden_states`: 0 is the embedding output, i is the
output of block i-1, and the LAST index (n_layer) is taken after the final layer norm. A layer map is a
list of `(student_idx, teacher_idx)` pairs over those indices. `resolve_layer_map` is the one resolver
that training and evaluation share.
"""

from __future__ import annotations

from collections.abc import Sequence


class LayerMapError(ValueError):
    """A bad --student-layers / --layer-map specification or an impossible match."""


def default_layer_map(student_layers: Sequence[int], teacher_n_layer: int) -> list[tuple[int, int]]:
    """Student hidden i (1..L-1) <-> teacher hidden layers[i-1]+1; student hidden L <-> teacher's last.

    Both last indices are post-ln_f, so the final pair always compares normalised outputs.
    """
    L = len(student_layers)
    pairs = [(i, int(student_layers[i - 1]) + 1) for i in range(1, L)]
    pairs.append((L, int(teacher_n_layer)))
    return pairs


def parse_layer_map(spec: str, student_n_layer: int) -> list[tuple[int, int]]:
    """`s:t,s:t,...` (explicit pairs) or `t1,...,tL` (teacher index for student hidden 1..L)."""
    text = str(spec).strip()
    if not text:
        raise LayerMapError(
            "--layer-map is empty; give s:t pairs (1:2,2:4) or one teacher index per student layer"
        )
    items = [item.strip() for item in text.split(",")]
    try:
        if all(":" in item for item in items):
            pairs = []
            for item in items:
                s, t = item.split(":")
                pairs.append((int(s), int(t)))
            return pairs
        if any(":" in item for item in items):
            raise LayerMapError(f"--layer-map {spec!r} mixes s:t pairs and plain indices; use one form")
        teacher_idx = [int(item) for item in items]
    except ValueError as exc:
        if isinstance(exc, LayerMapError):
            raise
        raise LayerMapError(
            f"--layer-map {spec!r}: every entry must be an integer or s:t of integers"
        ) from None
    if len(teacher_idx) != student_n_layer:
        raise LayerMapError(
            f"--layer-map {spec!r} lists {len(teacher_idx)} teacher indices but the student has "
            f"{student_n_layer} layers; give one per student layer or use s:t pairs"
        )
    return [(i + 1, t) for i, t in enumerate(teacher_idx)]


def validate_layer_map(
    pairs: Sequence[tuple[int, int]],
    student_n_layer: int,
    teacher_n_layer: int,
    student_dim: int | None = None,
    teacher_dim: int | None = None,
    allow_projection: bool = True,
) -> None:
    """Raise LayerMapError unless every pair is in range, no index repeats, and widths can be matched."""
    if not pairs:
        raise LayerMapError("layer map is empty: at least one (student, teacher) pair is needed")
    if len(pairs) > student_n_layer + 1:
        raise LayerMapError(
            f"layer map has {len(pairs)} pairs but the student has only {student_n_layer + 1} hidden states"
        )
    for s, t in pairs:
        if not 0 <= s <= student_n_layer:
            raise LayerMapError(f"layer map pair {s}:{t}: student index {s} outside 0..{student_n_layer}")
        if not 0 <= t <= teacher_n_layer:
            raise LayerMapError(f"layer map pair {s}:{t}: teacher index {t} outside 0..{teacher_n_layer}")
    students = [s for s, _ in pairs]
    teachers = [t for _, t in pairs]
    for name, idx in (("student", students), ("teacher", teachers)):
        dup = sorted({i for i in idx if idx.count(i) > 1})
        if dup:
            raise LayerMapError(
                f"layer map repeats {name} index {dup}; each hidden state may be matched once"
            )
    if student_dim is not None and teacher_dim is not None:
        if student_dim < 1 or teacher_dim < 1:
            raise LayerMapError(
                f"hidden widths must be positive (student {student_dim}, teacher {teacher_dim})"
            )
        if student_dim != teacher_dim and not allow_projection:
            raise LayerMapError(
                f"student width {student_dim} differs from teacher width {teacher_dim} and projections are "
                f"off; enable them or use a student of width {teacher_dim}"
            )


def uniform_layer_map(student_n_layer: int, teacher_n_layer: int) -> list[tuple[int, int]]:
    """Student hidden i -> teacher hidden round(i*T/S): the student's layers spread evenly, last onto last."""
    return [(i, round(i * teacher_n_layer / student_n_layer)) for i in range(1, student_n_layer + 1)]


def resolve_layer_map(spec: str | None, student_layers: Sequence[int] | None, student_n_layer: int,
                      teacher_n_layer: int) -> tuple[list[tuple[int, int]], str]:
    """The layer map of a run and where it came from (`--layer-map`, `uniform`, `truncation`).

    An explicit spec wins; `uniform` spreads the layers evenly; a truncated student is matched block for
    block; anything else (a random or loaded student) is spread evenly too.
    """
    if spec and str(spec).strip().lower() == "uniform":
        return uniform_layer_map(student_n_layer, teacher_n_layer), "uniform"
    if spec:
        return parse_layer_map(spec, student_n_layer), "--layer-map"
    if student_layers:
        return default_layer_map(student_layers, teacher_n_layer), "truncation"
    return uniform_layer_map(student_n_layer, teacher_n_layer), "uniform"
