"""The training loop, read top to bottom: set up, (resume), then steps until done, saving as configured.

What trains and how it is written is the ``weights`` strategy's business: LoRA adapters written as a kohya file
(``lora_weights.py``), or the full UNet (+ text encoder) written as a single-file checkpoint (``full_weights.py``).

Exactness rules that make resume bit-identical on CPU: data order and augmentations come from the data pipeline's
per-(epoch, batch) seeds; noise comes from the global torch RNG, which the saved state restores; gradient
accumulation windows never cross an epoch boundary; state is saved only after an optimizer step.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm.auto import tqdm

from library.config import FurnaceConfig
from library.data.pipeline import build_training_data
from library.training import run_files
from library.training.accelerator import build_accelerator
from library.training.compare_at_end import write_compare_grid
from library.training.deepspeed_setup import (
    TrainedModules,
    backward,
    gathered,
    partitioned_weights_read_early,
    uses_deepspeed,
    zero_stage,
)
from library.training.diffusion_step import LossSettings, denoising_loss
from library.training.exceptions import NonFiniteLossError
from library.training.interrupt import graceful_stop
from library.training.loss import weighted_mean
from library.training.memory_options import load_training_model, release_cached_modules
from library.training.noise import sample_noise, sample_timesteps
from library.training.previews import PreviewSchedule
from library.training.progress import PhaseTimes, SmoothedValue, StepLosses
from library.training.retention import prune_intermediate
from library.training.run_info import training_info
from library.training.run_setup import (
    WeightsFactory,
    build_optimization,
    new_session,
    plan_schedule,
    prepare_output,
    reporting,
)
from library.training.speed_options import apply_model_options, apply_process_settings
from library.training.state import LoopPosition, load_training_state, resolve_resume_dir, save_training_state
from library.training.step_inputs import StepInputs
from library.training.validation import fixed_validation_loss

logger = logging.getLogger(__name__)


BeforeData = Callable[[FurnaceConfig, object, torch.device], object]
"""A step run on the main process after the model loads and before the dataset is scanned (class images)."""


class Trainer:
    """One training run; ``weights_factory`` builds what trains (LoRA adapters or full modules)."""

    def __init__(
        self, config: FurnaceConfig, weights_factory: WeightsFactory, before_data: BeforeData | None = None
    ) -> None:
        self.config, self.weights_factory, self.before_data = config, weights_factory, before_data
        self.accelerator, self.precision = build_accelerator(config)
        from accelerate.utils import set_seed

        set_seed(config.training.seed, device_specific=True)  # each rank draws its own noise
        self.is_main = self.accelerator.is_main_process
        self.paths = prepare_output(config, self.is_main)
        self.progress, self.metrics = reporting(config, self.paths, self.is_main)
        self.session_id, self.started_at = new_session()
        self.last_saved: Path | None = None
        self.setup_times = PhaseTimes()

    # ----------------------------------------------------------------------------------------------- setup
    def setup(self) -> None:
        config, accelerator = self.config, self.accelerator
        times = self.setup_times
        apply_process_settings(config.training)
        with times.phase("model load"):
            self.model = load_training_model(config, self.weights_factory, self.precision)
        for line in self.model.summary_lines():
            logger.info("%s", line)
        if self.before_data is not None:
            with times.phase("class images"):
                if self.is_main:
                    self.before_data(config, self.model, accelerator.device)
                accelerator.wait_for_everyone()
        with times.phase("dataset scan"):
            self.data = build_training_data(config, accelerator.process_index, accelerator.num_processes)
        for line in self.data.summary_lines():
            logger.info("%s", line)
        with times.phase("trained weights"):
            self.weights = self.weights_factory(config, self.model, self.precision, accelerator.device)
            apply_model_options(config.training, self.model.unet)
        with times.phase("latents"):
            self.data.prepare(
                self.model.vae,
                accelerator.device,
                torch.float32,
                cache_latents=config.dataset.cache_latents,
                cache_to_disk=config.dataset.cache_latents_to_disk,
                vae_batch_size=config.training.latents_per_encode,
            )
        self.schedule = plan_schedule(config, self.data.steps_per_epoch)
        with times.phase("optimizer"):
            self.optimizer, lr_scheduler = build_optimization(config, self.weights.param_groups(), self.schedule)
            trained = self.weights.modules_to_prepare()
            self.saved_parameters = [p for module in trained for p in module.parameters() if p.requires_grad]
            self.wrapped, self.optimizer, self.lr_scheduler = self._prepare(trained, lr_scheduler)
            self.weights.register_state_hooks(accelerator)
        with times.phase("text-encoder outputs"):
            self.inputs = StepInputs(config, self.model, self.data, accelerator.device, self.weights, self.wrapped)
        self.loss_settings = LossSettings(
            config.training.loss_type, config.training.huber_c, config.training.min_snr_gamma
        )
        self.sampler = PreviewSchedule(config, self.model, self.paths.output_dir, self.precision)
        release_cached_modules(config, self.model, self.weights.saves_base_model, previews=self.sampler.enabled)
        self._set_training_modes()
        logger.info("set-up: %s", times.summary())

    def _set_training_modes(self) -> None:
        """The trained modules in training mode (adapter dropout, text-encoder activation checkpointing), the frozen
        ones in eval. Previews, validation and the compare grid switch to eval and hand these modes back."""
        for module in self._modules():
            module.eval()
        for module in self.weights.modules_to_prepare():
            self.wrapped.get(id(module), module).train()

    def _modules(self) -> list[torch.nn.Module]:
        return [self.model.unet, self.model.vae, *self.model.text_encoders]

    def _prepare(self, trained: list[torch.nn.Module], lr_scheduler):
        """Wrap for distributed training; returns {id(module): what the loop calls}, optimizer, scheduler. Under
        DeepSpeed one engine holds every trained module and the loop calls the modules themselves."""
        accelerator = self.accelerator
        if uses_deepspeed(accelerator):
            _, optimizer, lr_scheduler = accelerator.prepare(TrainedModules(trained), self.optimizer, lr_scheduler)
            if zero_stage(accelerator) == 3:
                partitioned_weights_read_early(trained)
            return {id(module): module for module in trained}, optimizer, lr_scheduler
        prepared = accelerator.prepare(*trained, self.optimizer, lr_scheduler)
        wrapped = dict(zip([id(m) for m in trained], prepared[: len(trained)]))
        return wrapped, prepared[len(trained)], prepared[len(trained) + 1]

    # ------------------------------------------------------------------------------------------------ loop
    def run(self) -> Path | None:
        """Train to the end (returns the final file) or until stopped (returns None; state saved)."""
        config = self.config
        position = self._start_position()
        self.smoothed = smoothed = SmoothedValue(config.logging.loss_smoothing)
        if position.smoothed_loss:
            smoothed.load_state_dict(position.smoothed_loss)
        self._event("start", step=position.global_step, total_steps=self.schedule.total_steps,
                    epochs=self.schedule.num_epochs, resumed=position.global_step > 0,
                    setup_seconds=self.setup_times.seconds)
        if position.global_step == 0:
            self._validate(0)  # the baseline the validation curve is read against
            if config.sample.at_first:
                self._sample(0)
        bar = tqdm(total=self.schedule.total_steps, initial=position.global_step, disable=not self.is_main,
                   desc="train", unit="step", dynamic_ncols=True)
        try:
            with bar, graceful_stop() as stop:
                if self._train_until_done_or_stopped(position, smoothed, bar, stop):
                    return self._stop(position, smoothed, stop.signal_name)
        except BaseException as error:
            self.fail(error)
            raise
        return self._finish(position, smoothed)

    def _train_until_done_or_stopped(self, position: LoopPosition, smoothed: SmoothedValue, bar, stop) -> bool:
        """Step through epochs; True when a stop was requested before the end."""
        step_started = time.perf_counter()
        while position.global_step < self.schedule.total_steps:
            batches = self.data.epoch_batches(position.epoch)
            while position.batches_done < len(batches) and position.global_step < self.schedule.total_steps:
                window = batches[position.batches_done : position.batches_done + self.schedule.accumulation]
                losses = self._optimizer_step(position, window)
                position.batches_done += len(window)
                position.global_step += 1
                seconds = time.perf_counter() - step_started
                step_started = time.perf_counter()
                self._after_step(position, losses, smoothed.update(losses["loss"]), seconds, bar)
                if stop.requested:
                    return True
            if position.batches_done >= len(batches):
                self._after_epoch(position)
                position.epoch += 1
                position.batches_done = 0
        return False

    def _start_position(self) -> LoopPosition:
        resume_dir = resolve_resume_dir(self.config.training.resume, self.paths.output_dir)
        if resume_dir is None:
            return LoopPosition(session_id=self.session_id, training_started_at=self.started_at)
        position = load_training_state(self.accelerator, resume_dir)
        self.weights.sync_to_step(position.global_step)
        self.session_id, self.started_at = position.session_id, position.training_started_at
        return position

    def _optimizer_step(self, position: LoopPosition, window: list[list[int]]) -> dict[str, float]:
        """Forward/backward over an accumulation window, then one optimizer step; returns the step's losses."""
        losses = StepLosses(split=self.data.num_reg_images > 0)
        for offset, indices in enumerate(window):
            local_number = position.batches_done + offset
            # Augmentation seeds must differ between ranks, which hold different images at the same position.
            batch_number = local_number * self.accelerator.num_processes + self.accelerator.process_index
            batch = self.data.load_batch(indices, position.epoch, batch_number)
            latents, conditioning, time_ids, weights = self.inputs.for_batch(batch)
            noise = sample_noise(
                latents,
                self.config.training.noise_offset,
                self.config.training.multires_noise_iterations,
                self.config.training.multires_noise_discount,
            )
            timesteps = sample_timesteps(
                latents.shape[0], self.model.noise_scheduler.config.num_train_timesteps, latents.device
            )
            with self.accelerator.autocast():
                per_sample = denoising_loss(
                    self.inputs.unet, self.model.noise_scheduler, latents, noise, timesteps, conditioning,
                    self.loss_settings, time_ids,
                )
                loss = weighted_mean(per_sample, weights)
            self._check_finite(loss, position)
            backward(self.accelerator, loss / len(window), closes_window=offset == len(window) - 1)
            losses.add(float(loss.detach()), per_sample.detach().float().tolist(), batch.is_reg)
        if self.config.optimizer.max_grad_norm > 0:
            self.accelerator.clip_grad_norm_(self.weights.parameters(), self.config.optimizer.max_grad_norm)
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.weights.after_step(position.global_step + 1)
        return losses.reduced(self.accelerator)

    def _check_finite(self, loss: torch.Tensor, position: LoopPosition) -> None:
        finite = self.accelerator.reduce(torch.isfinite(loss.detach()).float(), "min")
        if float(finite) < 1:
            step = position.global_step + 1
            kept = f"the last good weights are {self.last_saved}" if self.last_saved else "no weights were saved yet"
            message = (
                f"loss became {float(loss.detach())} at step {step} (epoch {position.epoch + 1}); training stopped and "
                f"{kept}. Lower optimizer.learning_rate, or use mixed_precision \"no\"/\"bf16\" instead of fp16."
            )
            self._event("error", step=step, message=message)
            raise NonFiniteLossError(message)

    # --------------------------------------------------------------------------------------- bookkeeping
    def _after_step(self, position: LoopPosition, losses: dict[str, float], smooth: float, seconds: float, bar) -> None:
        step, config = position.global_step, self.config
        rates = {f"lr/{group.get('name', i)}": group["lr"] for i, group in enumerate(self.optimizer.param_groups)}
        bar.update(1)
        bar.set_postfix(epoch=position.epoch + 1, loss=f"{smooth:.4f}",
                        lr=f"{next(iter(rates.values())):.2e}", refresh=False)
        remaining = (self.schedule.total_steps - step) * seconds
        loss = losses["loss"]
        terms = {f"{name}_loss": value for name, value in losses.items() if name != "loss"}
        self._event("step", step=step, epoch=position.epoch + 1, loss=loss, smoothed_loss=smooth, lr=rates, **terms,
                    seconds_per_step=round(seconds, 4), eta_seconds=round(remaining, 1),
                    total_steps=self.schedule.total_steps)
        if step % config.logging.log_every_n_steps == 0 or step == 1:
            extra = {f"loss/{name}": value for name, value in losses.items() if name != "loss"}
            self.metrics.scalars({"loss/current": loss, "loss/average": smooth, **extra, **rates}, step)
        if self.sampler.due_at_step(step):
            self._sample(step)
        if config.output.save_every_n_steps and step % config.output.save_every_n_steps == 0 \
                and step < self.schedule.total_steps:
            self._save_weights(run_files.step_path(self.paths.output_dir, config.output.output_name, step), position)
            if config.output.save_state:
                self._save_state(position, self.smoothed)
        if config.training.validation_every_n_steps and step % config.training.validation_every_n_steps == 0:
            self._validate(step)

    def _after_epoch(self, position: LoopPosition) -> None:
        epoch, config = position.epoch + 1, self.config
        self._event("epoch", epoch=epoch, step=position.global_step)
        if position.global_step >= self.schedule.total_steps:
            return
        if config.output.save_every_n_epochs and epoch % config.output.save_every_n_epochs == 0:
            self._save_weights(run_files.epoch_path(self.paths.output_dir, config.output.output_name, epoch), position)
        if self.sampler.due_at_epoch(epoch):
            self._sample(position.global_step)

    def _finish(self, position: LoopPosition, smoothed: SmoothedValue) -> Path:
        config = self.config
        if self.data.has_validation:
            self._validate(position.global_step)
        final = run_files.final_path(self.paths.output_dir, config.output.output_name)
        self._save_weights(final, position, finished=True)
        if config.output.save_state_on_train_end or config.output.save_state:
            self._save_state(position, smoothed)
        if self.sampler.enabled:
            self._sample(position.global_step)
        write_compare_grid(config, self.model, getattr(self.weights, "network", None), self.sampler.prompts,
                           self.optimizer, self.accelerator, self.progress)
        self._event("done", step=position.global_step, file=final)
        self._close()
        return final

    def _stop(self, position: LoopPosition, smoothed: SmoothedValue, signal_name: str) -> None:
        state = self._save_state(position, smoothed)
        self._event("stopped", step=position.global_step, signal=signal_name, state=state)
        logger.warning("stopped at step %d; resume with --resume latest (state in %s)", position.global_step, state)
        self._close()
        return None

    def _save_weights(self, path: Path, position: LoopPosition, finished: bool = False) -> None:
        self.accelerator.wait_for_everyone()
        with gathered(self.accelerator, self.saved_parameters):
            if self.is_main:
                started = time.perf_counter()
                self.weights.save(path, training_info(self.config, self.data, self.schedule, position, finished))
                output = self.config.output
                prune_intermediate(self.paths.output_dir, output.output_name, output.save_last_n)
                self.last_saved = path
                self._event("checkpoint", step=position.global_step, file=path,
                            seconds=round(time.perf_counter() - started, 3))
                logger.info("saved %s", path)
        self.accelerator.wait_for_everyone()

    def _save_state(self, position: LoopPosition, smoothed: SmoothedValue) -> Path:
        position.smoothed_loss = smoothed.state_dict()
        return save_training_state(self.accelerator, self.paths.output_dir, position)

    def _sample(self, step: int) -> None:
        self.accelerator.wait_for_everyone()
        if self.is_main:
            for preview in self.sampler.render(step):
                self.metrics.image(f"sample/{preview.path.stem.rsplit('_', 1)[0]}", preview.image, step)
                self._event("sample", step=step, file=preview.path, prompt=preview.prompt.prompt)
            self.metrics.flush()
        elif zero_stage(self.accelerator) == 3:
            self.sampler.render_alongside()  # partitioned weights: every forward gathers them from every rank
        self.accelerator.wait_for_everyone()

    def _validate(self, step: int) -> None:
        if not self.data.has_validation:
            return
        latents, weights = self.inputs.validation_latents()
        loss = fixed_validation_loss(
            self.inputs.unet, self.model.noise_scheduler, latents, self.inputs.validation_conditioning, weights,
            self.loss_settings, seed=self.config.training.seed, modules=self._modules(),
        )
        loss = float(self.accelerator.reduce(torch.tensor(loss, device=self.accelerator.device), "mean"))
        self.metrics.scalars({"loss/validation": loss}, step)
        self._event("validation", step=step, loss=loss)
        logger.info("step %d: validation loss %.5f", step, loss)

    def _event(self, kind: str, **fields) -> None:
        self.progress.event(kind, **fields)

    def fail(self, error: BaseException) -> None:
        """Record why the run ended (the GUI and scripts read it from progress.jsonl) and release the writers."""
        if not isinstance(error, NonFiniteLossError):  # that one was recorded with its step already
            self._event("error", message=str(error) or type(error).__name__)
        self._close()

    def _close(self) -> None:
        self.metrics.close()
        self.progress.close()
        self.accelerator.end_training()


def train(
    config: FurnaceConfig, weights_factory: WeightsFactory, before_data: BeforeData | None = None
) -> Path | None:
    """Run a training from a resolved config; returns the final file, or None when stopped early."""
    trainer = Trainer(config, weights_factory, before_data)
    try:
        trainer.setup()
    except BaseException as error:
        trainer.fail(error)
        raise
    return trainer.run()


