"""`--teacher-cache`: which run a teacher cache can serve, checked once (pre-flight and setup use the same).

A cache stands in for the teacher's logits only, for the terms the registry marks `topk_cache` (kd): a run
with any other teacher term (hidden states, critics, rkl ...) still runs the live teacher, so it is refused
with one line rather than silently paying for both. The cache must be of the train split this run reads, in
blocks of its `--seq-len`, by its teacher (same config and weight files), at its kd temperature, and hold
at least the largest `kd_topk` asked for (a cache of k serves any k' <= k; kd_topk 0 reads all k).
"""

from __future__ import annotations

from Code.config import RunConfig
from Code.data_pipeline.teacher_cache import HOW, TeacherCache, data_identity, find_cache
from Code.knobs import ConfigError
from Code.objectives.registry import REGISTRY


def open_run_cache(cfg: RunConfig, verify: bool = False) -> TeacherCache | None:
    """The run's teacher cache, checked against it (ConfigError naming the problem and the fix); None without
    --teacher-cache. `verify`: also check each array's sha256 (reads the whole cache once)."""
    where = cfg.data.teacher_cache
    if not where:
        return None
    if cfg.data.task != "lm":
        raise ConfigError("--teacher-cache holds targets for language-model blocks: use it with --task lm, or drop it")
    servable = ", ".join(name for name, spec in REGISTRY.items() if spec.topk_cache)
    live = [t.name for t in cfg.losses if t.spec.needs_teacher and not t.spec.topk_cache]
    if live:
        raise ConfigError(f"loss '{live[0]}' needs the live teacher (hidden states or full logits), which a teacher "
                          f"cache does not hold (it serves {servable}): drop --teacher-cache (TEACHER_CACHE) or "
                          f"the term")
    cached = [t for t in cfg.losses if t.spec.topk_cache]
    if not cached:
        raise ConfigError(f"--teacher-cache given but no term of loss {cfg.loss_label!r} reads it ({servable}): "
                          "add one or drop --teacher-cache")
    seq_len = cfg.data.seq_len
    min_k = max(t.options.kd_topk for t in cached)
    cache = TeacherCache(find_cache(where, "train", seq_len, min_k), verify=verify)
    problem = cache.mismatch(data_identity(cfg.data.data_dir, "train"), seq_len,
                             None if cfg.model.no_teacher else cfg.model.teacher)
    if problem:
        raise ConfigError(f"teacher cache {cache.path} cannot serve this run: {problem}: {HOW} --overwrite")
    for t in cached:
        if t.options.temperature != cache.temperature:
            raise ConfigError(f"loss '{t.name}' runs at temperature {t.options.temperature}, the teacher cache holds "
                              f"targets at {cache.temperature}: use --temperature {cache.temperature} or rebuild "
                              f"the cache with --temperature {t.options.temperature}")
    return cache
