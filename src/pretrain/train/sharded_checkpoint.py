"""Checkpoints that scale: sharded (torch.distributed.checkpoint), asynchronous, resharding, incremental.

A sharded checkpoint is `checkpoint-<step>/` holding DCP's files (every process writes its own
shards of model and optimizer, nothing is gathered to rank 0), `scheduler.pt`, `rng-<rank>.pt`,
`trainer_state.json` and the resolved config. It is written under `.tmp-checkpoint-<step>/` and
renamed into place, and `latest` replaced, only when every process has finished writing: with
`train.async_save` the writing runs in a background thread on a CPU copy of the state while
training goes on, and a kill at any moment leaves `latest` on the previous complete checkpoint.
Loading goes through DCP's planner into the *current* layout (TP=2 -> 1 process and back).

Incremental checkpoints (`train.incremental_save=K`): after a full save, the next K saves store per
process only what changed since it: tensors whose bytes are equal are referenced, the others are
stored as XOR against the full checkpoint's bytes, byte-planes split (all exponent bytes together)
and zstd-compressed; restore is bit-exact. Each process keeps the full checkpoint's bytes of its
own shard in memory (one more copy of its model + optimizer state), and an incremental checkpoint
resumes only on the layout that wrote it (its deltas are of local shards).
"""

from __future__ import annotations

import copy
import io
import json
import os
import random
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import zstandard
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from pretrain.config import ConfigError
from pretrain.settings import TrainConfig
from pretrain.train.checkpoint import LATEST_FILE, STATE_FILE, TrainerState

INCREMENTAL_FILE = "incremental.json"
ZSTD_LEVEL = 3  # zstd's default: the XOR planes of a few optimizer steps compress as well at 3 as at 9

Path_ = tuple[Any, ...]  # a leaf's path in the nested state tree


def is_sharded_checkpoint(path: Path) -> bool:
    return (path / ".metadata").is_file() or (path / INCREMENTAL_FILE).is_file()


def protected_bases(output_dir: Path) -> set[str]:
    """The full checkpoints that incremental checkpoints in `output_dir` are deltas of."""
    return {json.loads(p.read_text())["base"] for p in output_dir.glob(f"checkpoint-*/{INCREMENTAL_FILE}")}


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def _torch_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    return getattr(optimizer, "optimizer", optimizer)  # Accelerate's AcceleratedOptimizer wraps it


class ShardedCheckpointer:
    """Saves and loads sharded checkpoints for one run; `enabled` says whether saves use this format."""

    def __init__(self, plan: Any, output_dir: Path, tcfg: TrainConfig, config_yaml: str) -> None:
        fmt = tcfg.checkpoint_format
        self.enabled = fmt == "sharded" or (
            fmt == "auto" and (plan.sharded or tcfg.async_save or tcfg.incremental_save > 0)
        )
        if not self.enabled and plan.sharded:
            raise ConfigError(
                f"train.checkpoint_format=accelerate cannot save the sharded {plan.name} layout; use sharded or auto"
            )
        if self.enabled and getattr(plan.accelerator, "distributed_type", None) == "DEEPSPEED":
            raise ConfigError(
                "sharded checkpoints are not built for DeepSpeed; set train.checkpoint_format=accelerate"
            )
        self.plan, self.output_dir, self.tcfg, self.config_yaml = plan, output_dir, tcfg, config_yaml
        self.main = plan.accelerator.is_main_process
        # Background writes must not share the training loop's process group (their collectives would interleave).
        self.async_group = (
            dist.new_group(backend="gloo") if tcfg.async_save and dist.is_initialized() else None
        )
        self.executor = ThreadPoolExecutor(max_workers=1) if tcfg.async_save else None
        self.pending: tuple[Future, Callable[[], None]] | None = None
        self.base: dict[Path_, np.ndarray] | None = (
            None  # bytes of this process's shard at the last full save
        )
        self.base_name, self.since_full = "", 0

    # --- saving ------------------------------------------------------------------------------
    def save(
        self,
        model: torch.nn.Module,
        optimizer: Any,
        scheduler: Any,
        state: TrainerState,
        on_complete: Callable[[Path], None],
        blocking: bool = False,
    ) -> Path:
        """Write checkpoint-<step>; returns its (future) path. Asynchronous unless `blocking`."""
        self.wait()  # one save in flight at a time
        final = self.output_dir / f"checkpoint-{state.step}"
        tmp = self.output_dir / f".tmp-checkpoint-{state.step}"
        if self.main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        _barrier()
        tree = self._state_tree(model, optimizer)
        torch.save(_rng_state(), tmp / f"rng-{_rank()}.pt")
        extras = {STATE_FILE: json.dumps(asdict(state), indent=2), "resolved_config.yaml": self.config_yaml}
        buffer = io.BytesIO()
        torch.save(scheduler.state_dict(), buffer)
        extras_bytes = {"scheduler.pt": buffer.getvalue()}
        incremental = self.tcfg.incremental_save > 0 and self.base is not None
        incremental = incremental and self.since_full < self.tcfg.incremental_save
        if incremental:
            write_delta(tree, self.base, tmp / f"delta-rank{_rank()}.bin")
            self.since_full += 1
            meta = {
                "base": self.base_name,
                "index": self.since_full,
                "world_size": self.plan.accelerator.num_processes,
            }
            extras[INCREMENTAL_FILE] = json.dumps({**meta, "layout": self.plan.name})
            self._finish(tmp, final, extras, extras_bytes, on_complete)
            return final
        background = self.executor is not None and not blocking
        # A private copy when written in the background (training changes the tensors meanwhile).
        staged = _stage(tree) if background or self.tcfg.incremental_save > 0 else tree
        if self.tcfg.incremental_save > 0:
            self.base, self.base_name, self.since_full = _leaf_bytes(staged), final.name, 0
        if background:
            future = self.executor.submit(
                dcp.save, staged, checkpoint_id=str(tmp), process_group=self.async_group
            )
            self.pending = (future, lambda: self._finish(tmp, final, extras, extras_bytes, on_complete))
        else:
            dcp.save(staged, checkpoint_id=str(tmp))
            self._finish(tmp, final, extras, extras_bytes, on_complete)
        return final

    def _state_tree(self, model: torch.nn.Module, optimizer: Any) -> dict[str, Any]:
        model_sd, optim_sd = get_state_dict(self.plan.unwrap(model), _torch_optimizer(optimizer))
        return {"model": model_sd, "optimizer": optim_sd}

    def _finish(
        self,
        tmp: Path,
        final: Path,
        extras: dict[str, str],
        extras_bytes: dict[str, bytes],
        on_complete: Callable,
    ) -> None:
        """Every process has written its part: complete the folder, rename it, move `latest`."""
        _barrier()
        if self.main:
            for name, data in extras_bytes.items():
                (tmp / name).write_bytes(data)
            if INCREMENTAL_FILE in extras:
                meta = json.loads(extras[INCREMENTAL_FILE])
                meta["bytes"], meta["base_bytes"] = (
                    _dir_bytes(tmp),
                    _dir_bytes(self.output_dir / meta["base"]),
                )
                extras[INCREMENTAL_FILE] = json.dumps(meta, indent=2)
                print(
                    f"{final.name}: incremental, {meta['bytes'] / 1e6:.3f} MB beside {meta['base_bytes'] / 1e6:.3f} MB "
                    f"for the full {meta['base']} ({100 * meta['bytes'] / max(meta['base_bytes'], 1):.1f}%)"
                )
            for name, text in extras.items():  # trainer_state.json last but for the marker: completeness
                if name != STATE_FILE:
                    (tmp / name).write_text(text)
            (tmp / STATE_FILE).write_text(extras[STATE_FILE])
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            pointer = self.output_dir / (LATEST_FILE + ".tmp")
            pointer.write_text(final.name)
            os.replace(pointer, self.output_dir / LATEST_FILE)
        _barrier()
        on_complete(final)

    def poll(self) -> None:
        """Complete a pending asynchronous save once every process has finished writing (a collective)."""
        if self.pending is None:
            return
        done = torch.tensor([int(self.pending[0].done())])
        if dist.is_initialized():
            dist.all_reduce(done, op=dist.ReduceOp.MIN)
        if done.item():
            self.wait()

    def wait(self) -> None:
        """Block until a pending asynchronous save is written and complete it."""
        if self.pending is None:
            return
        future, finish = self.pending
        self.pending = None
        future.result()
        finish()

    # --- loading -----------------------------------------------------------------------------
    def load(self, path: Path, model: torch.nn.Module, optimizer: Any, scheduler: Any) -> TrainerState:
        """Restore model, optimizer, scheduler and RNG from `path` into this run's layout."""
        try:
            state = TrainerState(**json.loads((path / STATE_FILE).read_text()))
            module, torch_optimizer = self.plan.unwrap(model), _torch_optimizer(optimizer)
            tree = self._state_tree(model, optimizer)
            meta = (
                json.loads((path / INCREMENTAL_FILE).read_text())
                if (path / INCREMENTAL_FILE).is_file()
                else None
            )
            if meta is not None:
                self._check_layout(path, meta)
                dcp.load(tree, checkpoint_id=str(path.parent / meta["base"]))
                base = _leaf_bytes(tree)
                apply_delta(tree, path / f"delta-rank{_rank()}.bin")
            else:
                dcp.load(tree, checkpoint_id=str(path))
                base = _leaf_bytes(tree) if self.tcfg.incremental_save > 0 else None
            _keep_kernel_choice(tree["optimizer"], torch_optimizer)
            set_state_dict(
                module, torch_optimizer, model_state_dict=tree["model"], optim_state_dict=tree["optimizer"]
            )
            scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
            rng = path / f"rng-{_rank()}.pt"
            if rng.is_file():  # a resume on more processes than saved leaves the new ranks' RNG as seeded
                _set_rng_state(torch.load(rng, weights_only=False))
        except ConfigError:
            raise
        except Exception as err:  # noqa: BLE001 - DCP, torch and pickle raise many types for damaged files
            first = str(err).splitlines()[0][:160] if str(err) else ""
            raise ConfigError(
                f"sharded checkpoint {path} is corrupt or does not match this model ({type(err).__name__}: {first}); "
                "resume from another checkpoint"
            ) from err
        if self.tcfg.incremental_save > 0 and base is not None:
            self.base = base
            self.base_name = meta["base"] if meta else path.name
            self.since_full = meta["index"] if meta else 0
        return state

    def _check_layout(self, path: Path, meta: dict[str, Any]) -> None:
        world = self.plan.accelerator.num_processes
        if meta["world_size"] != world or meta["layout"] != self.plan.name:
            raise ConfigError(
                f"incremental checkpoint {path} was written by {meta['world_size']} processes ({meta['layout']}) and "
                f"holds deltas of their shards; resume it on that layout, or resume from the full {meta['base']} "
                f"on {world} processes ({self.plan.name})"
            )


def _keep_kernel_choice(optim_tree: dict[str, Any], optimizer: torch.optim.Optimizer) -> None:
    """This run's kernel flags over the checkpoint's: a 1-process run's fused AdamW fails on a TP
    resume's DTensors ("got mixed torch.Tensor and DTensor")."""
    for saved, current in zip(optim_tree.get("param_groups", []), optimizer.param_groups, strict=False):
        for key in ("fused", "foreach", "capturable", "differentiable"):
            if key in current:
                saved[key] = current[key]


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --- the state tree, leaf by leaf -------------------------------------------------------------
def _leaves(tree: Any, path: Path_ = ()) -> Iterator[tuple[Path_, Any]]:
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _leaves(value, (*path, key))
    elif isinstance(tree, list):  # a tuple (Adam's betas) is one leaf: it cannot be assigned into
        for i, value in enumerate(tree):
            yield from _leaves(value, (*path, i))
    else:
        yield path, tree


def _stage(tree: Any) -> Any:
    """A copy of the tree whose tensors share no memory with the model or optimizer."""
    if isinstance(tree, dict):
        return {k: _stage(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_stage(v) for v in tree]
    if isinstance(tree, torch.Tensor):
        return tree.detach().clone()
    return copy.deepcopy(tree)


def _local(t: torch.Tensor) -> torch.Tensor:
    """This process's shard of `t` (a DTensor's local tensor; a plain tensor itself)."""
    from torch.distributed.tensor import DTensor

    return t.to_local() if isinstance(t, DTensor) else t


def _as_bytes(t: torch.Tensor) -> np.ndarray:
    return _local(t).detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()


def _leaf_bytes(tree: Any) -> dict[Path_, np.ndarray]:
    return {path: _as_bytes(v).copy() for path, v in _leaves(tree) if isinstance(v, torch.Tensor)}


# --- XOR deltas ---------------------------------------------------------------------------------
def encode_delta(current: np.ndarray, base: np.ndarray, itemsize: int) -> bytes:
    """zstd(byte-planes of current XOR base): unchanged high bytes of floats become runs of zeros."""
    xor = np.bitwise_xor(current, base)
    planes = xor.reshape(-1, itemsize).T if itemsize > 1 else xor
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(np.ascontiguousarray(planes).tobytes())


def decode_delta(blob: bytes, base: np.ndarray, itemsize: int) -> np.ndarray:
    planes = np.frombuffer(zstandard.ZstdDecompressor().decompress(blob, max_output_size=base.size), np.uint8)
    xor = planes.reshape(itemsize, -1).T.reshape(-1) if itemsize > 1 else planes
    return np.bitwise_xor(xor, base)


def write_delta(tree: Any, base: dict[Path_, np.ndarray], file: Path) -> dict[str, int]:
    """Write this process's incremental file: references, XOR deltas and the non-tensor leaves."""
    refs, deltas, objects, aliases = [], {}, {}, {}
    first: dict[tuple, Path_] = {}  # tied weights (embedding and head): one tensor, stored once
    for path, value in _leaves(tree):
        if not isinstance(value, torch.Tensor):
            objects[path] = value
            continue
        current = _as_bytes(value)
        if path not in base or base[path].size != current.size:
            raise ConfigError(
                f"state entry {path} changed shape since the full checkpoint; make a full save instead"
            )
        local = _local(value)
        key = (local.data_ptr(), local.shape, local.dtype)
        if local.numel() and key in first:
            aliases[path] = first[key]
            continue
        first[key] = path
        if np.array_equal(current, base[path]):
            refs.append(path)
        else:
            deltas[path] = encode_delta(current, base[path], local.element_size())
    # Protocol 4 pickles bytes as they are (torch.save's default protocol 2 inflates them by ~1.5x).
    record = {"refs": refs, "deltas": deltas, "objects": objects, "aliases": aliases}
    torch.save(record, file, pickle_protocol=4)
    return {"referenced": len(refs), "delta": len(deltas), "aliased": len(aliases)}


def apply_delta(tree: Any, file: Path) -> None:
    """Turn a tree loaded from the full checkpoint into the incremental one's state, bit for bit."""
    record = torch.load(file, weights_only=False)
    # Decode every delta before writing any: tied weights (embedding and head) are one tensor under
    # two names, and XOR-ing the second name against already-restored bytes would undo the first.
    restored = {}
    for path, value in _leaves(tree):
        if isinstance(value, torch.Tensor) and path in record["deltas"]:
            itemsize = _local(value).element_size()
            restored[path] = (value, decode_delta(record["deltas"][path], _as_bytes(value), itemsize))
        elif path in record["objects"]:
            _assign(tree, path, record["objects"][path])
    with torch.no_grad():
        for value, data in restored.values():
            local = _local(value)
            local.copy_(torch.from_numpy(data).view(local.dtype).reshape(local.shape))
        leaves = dict(_leaves(tree))
        for path, source in record.get("aliases", {}).items():
            if _local(leaves[path]).data_ptr() != _local(leaves[source]).data_ptr():
                _local(leaves[path]).copy_(_local(leaves[source]))


def _assign(tree: Any, path: Path_, value: Any) -> None:
    for key in path[:-1]:
        tree = tree[key]
    tree[path[-1]] = value
