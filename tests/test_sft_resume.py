"""SFT resume safety: another run's checkpoints are refused, a half-written checkpoint is skipped, a full disk is
one line, and a killed-and-resumed run sees the batches an uninterrupted run sees."""

from __future__ import annotations

import errno
import hashlib
import json
from pathlib import Path

import pytest

from medvlthinker import staging
from medvlthinker.converters.sft_format import convert_to_sft
from medvlthinker.data import to_dataset
from medvlthinker.train import sft, sft_config, sft_resume

ROOT = Path(__file__).resolve().parent.parent
TINY_CONFIG = ROOT / "configs" / "sft" / "tiny_cpu.yaml"


def _cfg(out: Path, data: Path, model, *extra):
    return sft_config.load_config(TINY_CONFIG, [f"model_name_or_path={model}", f"output_dir={out}", f"train_data={data}",
                                         "max_length=256", *extra])


def _fake_checkpoint(out: Path, step: int, *, state: bool = True, weights: bool = True) -> Path:
    path = out / f"checkpoint-{step}"
    path.mkdir(parents=True)
    if state:
        (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    if weights:
        (path / "model.safetensors").write_bytes(b"weights")
    return path


@pytest.fixture(scope="module")
def text_sft(train_text_rows):
    return convert_to_sft(to_dataset(train_text_rows[:6]))


def test_checkpoints_of_another_run_are_refused_before_the_model_loads(tmp_path, text_sft):
    out = tmp_path / "run"
    first = _cfg(out, tmp_path, "no/such/model/dir")
    assert sft_resume.prepare_output_dir(first, text_sft) is None  # nothing to resume: writes the identity
    _fake_checkpoint(out, 1)
    assert sft_resume.prepare_output_dir(first, text_sft) == str(out / "checkpoint-1")
    # another learning rate, another data set: stopped before build_trainer (the model path would not even load)
    with pytest.raises(sft_resume.ResumeError, match=r"another run \(learning_rate was 0\.0001, now 0\.0002\); fix: "
                                                     r"pass --overwrite .* or choose a new output_dir"):
        sft.run_sft(_cfg(out, tmp_path, "no/such/model/dir", "learning_rate=2e-4"), train_dataset=text_sft)
    with pytest.raises(sft_resume.ResumeError, match=r"train_rows was 6, now 5; train_fingerprint was"):
        sft.run_sft(first, train_dataset=text_sft.select(range(5)))
    with pytest.raises(sft_resume.ResumeError, match=r"model_name_or_path was 'no/such/model/dir', now 'other'"):
        sft_resume.prepare_output_dir(_cfg(out, tmp_path, "other"), text_sft)
    # --overwrite starts afresh: the old checkpoints go, the new identity is recorded; a process other than the main
    # one (FSDP) starts afresh too, leaving the removal to the main one
    second = _cfg(out, tmp_path, "no/such/model/dir", "learning_rate=2e-4")
    assert sft_resume.prepare_output_dir(second, text_sft, overwrite=True, main_process=False) is None
    assert (out / "checkpoint-1").is_dir()
    assert sft_resume.prepare_output_dir(second, text_sft, overwrite=True) is None
    assert not (out / "checkpoint-1").exists()
    recorded = json.loads((out / sft_resume.IDENTITY_FILE).read_text())
    assert recorded["trainer_args"]["learning_rate"] == 2e-4


def test_the_script_refuses_another_run_in_one_line_and_overwrite_starts_afresh(tmp_path, text_sft):
    import importlib.util

    from click.testing import CliRunner

    spec = importlib.util.spec_from_file_location("train_sft", ROOT / "train" / "sft" / "train_sft.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)

    data = tmp_path / "data"
    text_sft.save_to_disk(str(data))
    out = tmp_path / "run"
    sft_resume.prepare_output_dir(_cfg(out, data, "tiny"), sft.load_train_dataset(_cfg(out, data, "tiny")))
    _fake_checkpoint(out, 1)
    args = [str(TINY_CONFIG), "model_name_or_path=tiny", f"train_data={data}", f"output_dir={out}", "max_length=256",
            "seed=7", "max_steps=1"]
    refused = CliRunner().invoke(script.main, args)
    assert refused.exit_code == 1 and "error: " in refused.output and "seed was 42, now 7" in refused.output
    assert "--overwrite" in refused.output and "Traceback" not in refused.output
    started = CliRunner().invoke(script.main, [*args, "--overwrite"])
    assert started.exit_code == 0 and "resuming" not in started.output, started.output
    assert not (out / "checkpoint-1").exists() and (out / "model.safetensors").is_file()


def test_a_half_written_checkpoint_is_skipped_with_a_warning(tmp_path):
    out = tmp_path / "run"
    _fake_checkpoint(out, 2)
    _fake_checkpoint(out, 4, state=False)  # killed while saving: weights, no trainer_state.json
    _fake_checkpoint(out, 6, weights=False)  # disk full while saving the weights
    (out / "checkpoint-8").mkdir()
    with pytest.warns(UserWarning, match=r"incomplete checkpoint .*checkpoint-6 \(no model weights"):
        assert sft.last_checkpoint(out) == str(out / "checkpoint-2")
    (out / "checkpoint-2" / "trainer_state.json").unlink()
    with pytest.warns(UserWarning, match=r"checkpoint-2 \(trainer_state\.json is missing"):
        assert sft.last_checkpoint(out) is None  # nothing complete: the run starts afresh


def test_a_full_disk_at_a_save_is_one_line_naming_the_folder(tmp_path, text_sft, tiny_model_dir, monkeypatch):
    from transformers import Trainer

    def no_space(self, *args, **kwargs):  # what the OS answers when the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Trainer, "save_model", no_space)
    cfg = _cfg(tmp_path / "run", tmp_path, tiny_model_dir, "max_steps=1")
    with pytest.raises(staging.DiskFullError, match=r"run: no space left on the device while saving .*GiB free\); "
                                                       r"fix: free space"):
        sft.run_sft(cfg, train_dataset=text_sft)


class _Recorder:
    """Hashes of the input_ids each micro-batch carries, in order, as the trainer's data collator builds them;
    with ``stop_at``, the run stops after that step's checkpoint is saved (the kill)."""

    def __init__(self, stop_at: int | None = None):
        from transformers import TrainerCallback

        self.batches: list[str] = []

        class Stop(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if stop_at is not None and state.global_step == stop_at:
                    control.should_training_stop = True

        self.callback = Stop()

    def wrap(self, trainer):
        collate = trainer.data_collator

        def recording(features):
            batch = collate(features)
            self.batches.append(hashlib.sha256(batch["input_ids"].numpy().tobytes()).hexdigest()[:12])
            return batch

        trainer.data_collator = recording
        return trainer


@pytest.mark.slow
def test_a_resumed_run_sees_the_batches_of_an_uninterrupted_run(tmp_path, text_sft, tiny_model_dir, monkeypatch):
    build, recorders = sft.build_trainer, []
    monkeypatch.setattr(sft, "build_trainer", lambda *a, **k: recorders[-1].wrap(build(*a, **k)))
    # 6 rows, 2 micro-batches a step: 4 steps cross into the second epoch, whose order is drawn afresh
    extra = ["max_steps=4", "global_batch_size=2", "per_device_train_batch_size=1", "save_strategy=steps",
             "save_steps=1"]
    whole = _Recorder()
    recorders.append(whole)
    sft.run_sft(_cfg(tmp_path / "whole", tmp_path, tiny_model_dir, *extra), train_dataset=text_sft,
                callbacks=[whole.callback])
    # 8 micro-batches trained, then the one the loader draws ahead to see the epoch's end
    assert len(whole.batches) == 9 and len(set(whole.batches[:6])) == 6 and whole.batches[6:8] != whole.batches[:2]

    killed, resumed = _Recorder(stop_at=2), _Recorder()
    cfg = _cfg(tmp_path / "killed", tmp_path, tiny_model_dir, *extra)
    recorders.append(killed)
    sft.run_sft(cfg, train_dataset=text_sft, callbacks=[killed.callback])
    recorders.append(resumed)
    assert killed.batches[:4] == whole.batches[:4]
    trainer = sft.run_sft(cfg, train_dataset=text_sft, callbacks=[resumed.callback])
    assert trainer.state.global_step == 4
    # the micro-batches of steps 1-2 are skipped without being built; steps 3-4 (into the second epoch) are the same
    assert resumed.batches == whole.batches[4:], (whole.batches, resumed.batches)
