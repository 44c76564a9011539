"""What the optimizer trains: the student and its projections into the teacher's width."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn
from transformers import PreTrainedModel

from Code.modeling.families import hidden_size
from Code.modeling.layer_map import LayerMapError


class HiddenProjections(nn.Module):
    """Maps student hidden states into the teacher's width: Linear per matched layer, or identity."""

    def __init__(self, student_dim: int, teacher_dim: int, n: int) -> None:
        super().__init__()
        self.student_dim, self.teacher_dim, self.n = student_dim, teacher_dim, n
        self.needed = student_dim != teacher_dim
        make = (lambda: nn.Linear(student_dim, teacher_dim)) if self.needed else nn.Identity
        self.proj = nn.ModuleList([make() for _ in range(n)])

    def forward(self, hidden: Sequence[Tensor]) -> list[Tensor]:
        if len(hidden) != self.n:
            raise LayerMapError(f"HiddenProjections built for {self.n} layers got {len(hidden)} tensors")
        return [p(h) for p, h in zip(self.proj, hidden, strict=True)]


class DistillStudent(nn.Module):
    """What the optimizer trains: the student and its projections into the teacher's width."""

    def __init__(self, student: PreTrainedModel, student_idx: list[int], teacher_dim: int) -> None:
        super().__init__()
        self.student = student
        self.student_idx = list(student_idx)
        self.projections = HiddenProjections(hidden_size(student.config), teacher_dim, len(self.student_idx))

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                need_hidden: bool = False) -> tuple[Tensor, list[Tensor]]:
        out = self.student(input_ids=input_ids, attention_mask=attention_mask,
                           output_hidden_states=need_hidden, use_cache=False)
        hidden = [out.hidden_states[i] for i in self.student_idx] if need_hidden else []
        return out.logits, self.projections(hidden) if hidden else []
