"""Pushing runs to the Hugging Face Hub: a preflight before training, then retried commits.

Everything goes through huggingface_hub's HTTP API (`create_repo`, `create_branch`, `create_commit`),
never a git clone. The endpoint, offline mode and token are resolved exactly as huggingface_hub
resolves them: HF_ENDPOINT (read when huggingface_hub is imported), HF_HUB_OFFLINE or
TRANSFORMERS_OFFLINE, and HF_TOKEN or the token saved by `hf auth login`. The token is handed to
huggingface_hub and never formatted into a message; any server text we quote has it masked anyway.

A push retries connection errors and HTTP 408/429/5xx with exponential backoff (PRETRAIN_HUB_ATTEMPTS
attempts, waiting PRETRAIN_HUB_BACKOFF_S, then twice that, ... capped at 60 s) and then raises
`HubError`. Nothing here ever deletes or rewrites a local file besides the model card README.md.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx2  # huggingface_hub 2.x's HTTP client: its TransportError is every network failure
from huggingface_hub import CommitOperationAdd, HfApi, constants, get_token
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled
from tqdm.auto import tqdm

from pretrain.config import ConfigError
from pretrain.hub.model_card import write_model_card

if TYPE_CHECKING:
    from pretrain.settings import TrainConfig

T = TypeVar("T")

RETRY_STATUS = (408, 429, 500, 502, 503, 504)
# Never pushed from an output_dir: resumable checkpoints (all_checkpoints pushes them on its own),
# the `latest` pointer, temporary and hidden entries, and offline wandb runs.
SKIPPED_TOP_LEVEL = ("checkpoint-", "latest", ".", "wandb")


class HubError(RuntimeError):
    """A push that failed after its retries; the local files are intact."""


@dataclass(frozen=True)
class Retry:
    """How hard a push tries before giving up."""

    attempts: int = 5
    """Attempts in total (1 = no retry)."""
    base_wait_s: float = 2.0
    """Wait before the second attempt (seconds); doubled before each further one."""
    max_wait_s: float = 60.0
    """Cap on one wait (seconds)."""

    @classmethod
    def from_env(cls) -> Retry:
        """The default policy, overridden by PRETRAIN_HUB_ATTEMPTS / PRETRAIN_HUB_BACKOFF_S."""
        return cls(
            attempts=max(1, int(os.environ.get("PRETRAIN_HUB_ATTEMPTS", cls.attempts))),
            base_wait_s=float(os.environ.get("PRETRAIN_HUB_BACKOFF_S", cls.base_wait_s)),
        )

    def wait_s(self, failed_attempts: int) -> float:
        return min(self.base_wait_s * 2 ** (failed_attempts - 1), self.max_wait_s)


# --- preflight --------------------------------------------------------------------------------------
def check_hub_access(
    tcfg: TrainConfig, contact_endpoint: bool = True, otherwise: str = ", or drop --train.push_to_hub"
) -> None:
    """Raise ConfigError now if pushing `tcfg.hub_model_id` could not succeed later.

    Every process checks offline mode and the token (local, so all agree); `contact_endpoint`
    (the main process) also asks the endpoint who the token belongs to and creates the repository
    (and branch), which proves write access before a single step is spent. `otherwise` ends each
    message with the other way out.
    """
    repo = tcfg.hub_model_id
    if constants.HF_HUB_OFFLINE:
        var = "HF_HUB_OFFLINE" if os.environ.get("HF_HUB_OFFLINE") else "TRANSFORMERS_OFFLINE"
        raise ConfigError(
            f"cannot push to {repo}: {var}={os.environ.get(var)} keeps the Hub client offline; unset {var}{otherwise}"
        )
    if get_token() is None:
        raise ConfigError(
            f"cannot push to {repo}: no Hugging Face token was found; set HF_TOKEN or run `hf auth login`{otherwise}"
        )
    if not contact_endpoint:
        return
    api = HfApi()
    try:
        role = api.whoami().get("auth", {}).get("accessToken", {}).get("role")
    except (HfHubHTTPError, httpx2.TransportError, OSError) as err:
        if _status(err) == 401:
            problem, fix = f"{constants.ENDPOINT} rejected the token", "set a valid HF_TOKEN"
        else:
            problem, fix = (
                f"cannot reach the Hub at {constants.ENDPOINT}",
                "check HF_ENDPOINT and the network",
            )
        raise ConfigError(f"cannot push to {repo}: {problem} ({describe(err)}); {fix}{otherwise}") from None
    if role == "read":
        raise ConfigError(
            f"cannot push to {repo}: the Hugging Face token is read-only; use a write token{otherwise}"
        )
    try:
        ensure_repo(api, repo, tcfg.hub_private, tcfg.hub_revision)
    except (HfHubHTTPError, httpx2.TransportError, OSError, ValueError) as err:
        raise ConfigError(
            f"cannot create or write {repo} on {constants.ENDPOINT} ({describe(err)}); "
            f"choose a repository id in a namespace your token can write to{otherwise}"
        ) from None


def ensure_repo(api: HfApi, repo_id: str, private: bool, revision: str) -> None:
    """Create the model repository (and branch) unless it exists."""
    api.create_repo(repo_id, private=private, exist_ok=True)
    if revision and revision != constants.DEFAULT_REVISION:
        api.create_branch(repo_id, branch=revision, exist_ok=True)


# --- pushing ----------------------------------------------------------------------------------------
def files_to_push(folder: Path) -> list[Path]:
    """Every file under `folder` except checkpoints, the `latest` pointer, hidden and wandb entries."""
    top = [p for p in sorted(folder.iterdir()) if not p.name.startswith(SKIPPED_TOP_LEVEL)]
    files = [p for p in top if p.is_file()]
    for directory in (p for p in top if p.is_dir()):
        files += sorted(p for p in directory.rglob("*") if p.is_file())
    return files


def push_folder(
    folder: Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str = "",
    path_in_repo: str = "",
    commit_message: str,
    retry: Retry | None = None,
) -> str:
    """Commit the files of `folder` to `repo_id` (under `path_in_repo`) in one commit; its URL.

    Raises HubError after the retries are spent, or at once for an error that a retry cannot fix.
    """
    files = files_to_push(folder)
    if not files:
        raise HubError(f"{folder} holds no files to push")
    prefix = f"{path_in_repo.strip('/')}/" if path_in_repo.strip("/") else ""
    api = HfApi()

    def attempt() -> str:
        ensure_repo(api, repo_id, private, revision)
        # Operations remember their upload state, so each attempt builds fresh ones.
        operations = [
            CommitOperationAdd(path_in_repo=prefix + p.relative_to(folder).as_posix(), path_or_fileobj=str(p))
            for p in files
        ]
        info = api.create_commit(
            repo_id, operations, commit_message=commit_message, revision=revision or None
        )
        return info.commit_url

    return with_retries(attempt, f"pushing {folder} to {repo_id}", retry or Retry.from_env())


def push_output(tcfg: TrainConfig, output_dir: Path) -> str:
    """The end-of-run push: write the model card, then commit output_dir (without checkpoints)."""
    write_model_card(output_dir, tcfg.hub_model_id)
    try:
        url = push_folder(
            output_dir,
            tcfg.hub_model_id,
            private=tcfg.hub_private,
            revision=tcfg.hub_revision,
            commit_message="End of training",
        )
    except HubError as err:
        raise HubError(
            f"{err}; the trained run is intact in {output_dir}: push it later with "
            f"pretrain push {output_dir} --repo-id {tcfg.hub_model_id}"
        ) from None
    print(f"pushed {output_dir} to {url}")
    return url


def push_checkpoint(trainer: Any, checkpoint: Path) -> None:
    """Push after a checkpoint save, per train.hub_strategy; call on every process.

    `trainer` is the running `pretrain.train.trainer.Trainer` (typed loosely: hub sits beside train,
    not above it); the runner hands this function to the trainer as its `after_save`.

    every_save pushes the model in Hugging Face format (gathered on all processes, written to a
    staging folder and removed after); all_checkpoints pushes the checkpoint folder to
    `checkpoint-<step>/`. A failure is a warning: training goes on and the final push retries.
    """
    tcfg, acc = trainer.tcfg, trainer.accelerator
    if not tcfg.push_to_hub or tcfg.hub_strategy == "end":
        return
    step = trainer.state.step
    if tcfg.hub_strategy == "every_save":
        state_dict = acc.get_state_dict(trainer.model)  # a collective under ZeRO-3/FSDP
        if acc.is_main_process:
            staging = trainer.output_dir / f".hub-staging-{step}"
            try:
                trainer.objective.save_model(acc.unwrap_model(trainer.model), staging, state_dict=state_dict)
                _push_or_warn(tcfg, staging, "", f"Training in progress, step {step}")
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    elif acc.is_main_process:
        _push_or_warn(tcfg, checkpoint, checkpoint.name, f"Checkpoint at step {step}")
    acc.wait_for_everyone()


def _push_or_warn(tcfg: TrainConfig, folder: Path, path_in_repo: str, message: str) -> None:
    try:
        push_folder(
            folder,
            tcfg.hub_model_id,
            private=tcfg.hub_private,
            revision=tcfg.hub_revision,
            path_in_repo=path_in_repo,
            commit_message=message,
        )
    except HubError as err:
        # tqdm.write keeps the line apart from the training progress bar.
        tqdm.write(f"warning: {err}; training continues", file=sys.stderr)


# --- retries and messages ---------------------------------------------------------------------------
def with_retries(call: Callable[[], T], what: str, retry: Retry) -> T:
    """Run `call`, retrying transient failures with exponential backoff; HubError when it gives up."""
    attempt = 1
    while True:
        try:
            return call()
        # huggingface_hub raises HTTP errors, httpx2 transport errors, OSError for local files,
        # ValueError for malformed answers and RuntimeError around failed LFS uploads.
        except (HfHubHTTPError, httpx2.TransportError, OSError, ValueError, RuntimeError) as err:
            if not is_transient(err):
                raise HubError(f"{what} failed: {describe(err)}") from None
            if attempt == retry.attempts:
                raise HubError(f"{what} failed after {attempt} attempts ({describe(err)})") from None
            wait = retry.wait_s(attempt)
            tqdm.write(
                f"hub: {what} failed ({describe(err)}); retry {attempt}/{retry.attempts - 1} in {wait:g}s",
                file=sys.stderr,
            )
            time.sleep(wait)
            attempt += 1


def _causes(err: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    while err is not None and err not in chain:
        chain.append(err)
        err = err.__cause__ or err.__context__
    return chain


def _http_error(err: BaseException) -> HfHubHTTPError | None:
    return next((e for e in _causes(err) if isinstance(e, HfHubHTTPError) and e.response is not None), None)


def _status(err: BaseException) -> int | None:
    http = _http_error(err)
    return http.response.status_code if http is not None else None


def is_transient(err: BaseException) -> bool:
    """A connection error, timeout, or HTTP 408/429/5xx anywhere in the exception chain."""
    chain = _causes(err)
    if any(isinstance(e, OfflineModeIsEnabled) for e in chain):
        return False
    status = _status(err)
    if status is not None:
        return status in RETRY_STATUS
    return any(isinstance(e, httpx2.TransportError | ConnectionError | TimeoutError) for e in chain)


def describe(err: BaseException) -> str:
    """One line saying what went wrong (HTTP status and server message, or the root cause), token masked."""
    http = _http_error(err)
    if http is not None:
        text = f"HTTP {http.response.status_code}" + (
            f": {http.server_message}" if http.server_message else ""
        )
    else:
        root = _causes(err)[-1]
        lines = str(root).strip().splitlines()
        text = f"{type(root).__name__}: {lines[0]}" if lines else type(root).__name__
    token = get_token()
    if token:
        text = text.replace(token, "***")
    return " ".join(text.split())[:300]


def _main_args(argv: list[str]) -> Any:
    import argparse

    parser = argparse.ArgumentParser(
        prog="pretrain push", description="Push an output or checkpoint folder to the Hugging Face Hub."
    )
    parser.add_argument(
        "folder", type=Path, help="a run's output_dir or one of its checkpoint-<step> folders"
    )
    parser.add_argument("--repo-id", required=True, help="Hub repository, e.g. user/name")
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument("--revision", default="", help="branch to push to (default: main)")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    """`pretrain push DIR --repo-id user/name [--private] [--revision R]`; 0 on success."""
    args = _main_args(argv)
    if not args.folder.is_dir():
        print(
            f"error: {args.folder} is not a directory; give a run's output_dir or a checkpoint folder",
            file=sys.stderr,
        )
        return 1
    from pretrain.settings import TrainConfig

    tcfg = TrainConfig(
        push_to_hub=True, hub_model_id=args.repo_id, hub_private=args.private, hub_revision=args.revision
    )
    try:
        check_hub_access(tcfg, otherwise="")
        write_model_card(args.folder, args.repo_id)
        url = push_folder(
            args.folder,
            args.repo_id,
            private=args.private,
            revision=args.revision,
            commit_message=f"Upload {args.folder.name} with pretrain push",
        )
    except (ConfigError, HubError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"pushed {args.folder} to {url}")
    return 0
