"""Safe checkpoint loading in bounded memory: official key names in, clear errors out.

Released VideoCrafter1 checkpoints are Lightning pickles whose weights sit under
``state_dict`` (AiT's mmcv checkpoints too); golden cases ship ``weights.safetensors``.
Both go through :func:`read_checkpoint`, and every module is filled by :func:`load_into`,
which refuses missing, unexpected or mis-shaped keys with a list of them.

Memory: torch pickles are memory-mapped (``mmap=True``), so reading one costs no RAM
until a tensor is used. A module built under :func:`meta_parameters` has no parameter
storage of its own, and :func:`load_into` makes the checkpoint's tensors its parameters
(``assign=True``); a float32 tensor is then never copied, fp16/bf16 ones are cast to the
module's dtype one at a time. Dropping the module and the dict unmaps the file.
"""
from __future__ import annotations

import contextlib
import pickle
from pathlib import Path
from typing import Iterator, Mapping

import torch

SHOWN_KEYS = 20


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, is untrusted, or does not fit the module."""


def _key_list(title: str, keys: list[str]) -> str:
    shown = ", ".join(keys[:SHOWN_KEYS])
    more = f" ... and {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else ""
    return f"{len(keys)} {title}: {shown}{more}"


def _torch_load(path: Path, trust: bool):
    """``torch.load`` memory-mapped; a file in the legacy (pre-zip) format cannot be mapped and is read whole."""
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust, mmap=True)
    except RuntimeError as exc:
        if "_use_new_zipfile_serialization" not in str(exc):
            raise
        return torch.load(path, map_location="cpu", weights_only=not trust)


def read_checkpoint(path: str | Path, *, trust: bool = False) -> dict[str, torch.Tensor]:
    """Read every tensor of a ``.safetensors`` or torch checkpoint file.

    Torch pickles load with ``weights_only=True``; one that needs arbitrary code
    loads only with ``trust=True`` (the CLI's ``--trust-checkpoint``).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from exc
    obj = read_torch_file(path, trust=trust)
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, expected a dict of tensors")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def read_torch_file(path: str | Path, *, trust: bool = False):
    """Whatever a torch file holds (a state dict, a list of tensors, ...), memory-mapped and read with
    ``weights_only=True``; one that needs arbitrary code loads only with ``trust=True``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"file not found: {path}")
    try:
        return _torch_load(path, trust)
    except pickle.UnpicklingError as exc:
        if trust:
            raise CheckpointError(f"{path} could not be unpickled: {exc}") from exc
        raise CheckpointError(
            f"{path} needs full pickle loading, which can run arbitrary code "
            f"(weights_only=True refused it: {str(exc).splitlines()[0]}). "
            "If you trust its source, pass --trust-checkpoint (trust=True)."
        ) from exc
    except (RuntimeError, OSError, EOFError) as exc:
        raise CheckpointError(f"{path} is not a readable torch checkpoint: {exc}") from exc


def select_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors under ``prefix``, with the prefix stripped (all of them when prefix is empty)."""
    if not prefix:
        return dict(state)
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


@contextlib.contextmanager
def meta_parameters() -> Iterator[None]:
    """Build modules whose parameters live on the meta device (no storage, no initialisation); buffers stay
    real, so computed non-persistent ones (e.g. attention masks) keep their values. Fill them with
    :func:`load_into`."""
    register = torch.nn.Module.register_parameter

    def register_on_meta(self, name, param):
        if param is not None and param.device.type != "meta":
            param = torch.nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(self, name, param)

    torch.nn.Module.register_parameter = register_on_meta
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = register


def fit_problem(module: torch.nn.Module, state: Mapping[str, torch.Tensor], *, what: str = "module") -> str | None:
    """Why ``state`` does not fit ``module`` (missing, unexpected or mis-shaped keys), or None when it does.
    Works on a module built under :func:`meta_parameters`, so a whole checkpoint can be checked for free."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mis_shaped = sorted(
        f"{k} (checkpoint {tuple(state[k].shape)}, model {tuple(own[k].shape)})"
        for k in set(own) & set(state)
        if tuple(state[k].shape) != tuple(own[k].shape)
    )
    problems = [
        _key_list(title, keys)
        for title, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("keys with wrong shapes", mis_shaped))
        if keys
    ]
    return f"checkpoint does not fit {what}: " + "; ".join(problems) if problems else None


def refuse(problems: list[str]) -> None:
    """Raise one :class:`CheckpointError` listing every problem, if there are any."""
    if problems:
        raise CheckpointError(
            "; ".join(problems) + ". Check that the checkpoint and --variant/--config describe the same model.")


def load_into(module: torch.nn.Module, state: Mapping[str, torch.Tensor], *, what: str = "module") -> None:
    """Make ``state``'s tensors the parameters and buffers of ``module`` (cast to the module's dtypes, so fp16
    and bf16 checkpoints load as float32); any missing, unexpected or mis-shaped key is an error."""
    problem = fit_problem(module, state, what=what)
    refuse([problem] if problem else [])
    own = module.state_dict()
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True, assign=True)


def load_checkpoint(
    module: torch.nn.Module, path: str | Path, *, prefix: str = "", trust: bool = False, what: str = "module"
) -> torch.nn.Module:
    """Read ``path``, keep the keys under ``prefix``, load them into ``module`` and return it."""
    load_into(module, select_prefix(read_checkpoint(path, trust=trust), prefix), what=what)
    return module
