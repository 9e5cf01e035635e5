"""The model as k-diffusion sees it: denoised = D(x, sigma), with classifier-free guidance wrapped around it."""
from __future__ import annotations

import torch

from ..patches import CFGArgs, CFGStep, ControlCall, default_cfg


def alphas_cumprod(scheduler_config: dict) -> torch.Tensor:
    """The training noise schedule, computed in float64 as LDM does, then kept in float32."""
    n = scheduler_config["num_train_timesteps"]
    start, end = scheduler_config["beta_start"], scheduler_config["beta_end"]
    kind = scheduler_config.get("beta_schedule", "scaled_linear")
    if kind == "scaled_linear":
        betas = torch.linspace(start**0.5, end**0.5, n, dtype=torch.float64) ** 2
    elif kind == "linear":
        betas = torch.linspace(start, end, n, dtype=torch.float64)
    else:
        raise ValueError(f"unsupported beta schedule {kind!r}")
    return torch.cumprod(1 - betas, dim=0).to(torch.float32)


class DiscreteEpsDenoiser:
    """An epsilon-predicting UNet over its 1000 training timesteps, in k-diffusion's sigma parameterisation
    (CompVisDenoiser semantics: sigmas from alphas_cumprod, log-sigma interpolation between timesteps)."""

    def __init__(self, unet, alphas_cumprod: torch.Tensor, prediction_type: str = "epsilon"):
        self.unet = unet
        self.v_prediction = prediction_type == "v_prediction"
        self.alphas_cumprod = alphas_cumprod = alphas_cumprod.to(torch.float32)
        self.sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
        self.log_sigmas = self.sigmas.log()

    @property
    def sigma_min(self) -> torch.Tensor:
        return self.sigmas[0]

    @property
    def sigma_max(self) -> torch.Tensor:
        return self.sigmas[-1]

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        log_sigma = sigma.log()
        dists = log_sigma - self.log_sigmas[:, None]
        low_idx = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=self.log_sigmas.shape[0] - 2)
        high_idx = low_idx + 1
        low, high = self.log_sigmas[low_idx], self.log_sigmas[high_idx]
        w = ((low - log_sigma) / (low - high)).clamp(0, 1)
        return ((1 - w) * low_idx + w * high_idx).view(sigma.shape)

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        t = t.float()
        low_idx, high_idx, w = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - w) * self.log_sigmas[low_idx] + w * self.log_sigmas[high_idx]).exp()

    def get_sigmas(self, n: int) -> torch.Tensor:
        """The model's own schedule: n timesteps evenly spaced from the last to the first, then 0."""
        t = torch.linspace(len(self.sigmas) - 1, 0, n)
        return torch.cat([self.t_to_sigma(t), t.new_zeros([1])])

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor, added_cond: dict | None = None,
                 concat: torch.Tensor | None = None, residuals=None) -> torch.Tensor:
        """added_cond: SDXL's pooled text embeds and time ids; concat: an inpainting model's extra channels;
        residuals(x_in, t, cond, added_cond) -> (down residuals, mid residual[, in-block features]) or None:
        ControlNet's, added to the UNet's skip connections and middle block; a T2I-Adapter's features, added
        inside the down blocks (any of the three may be None)."""
        sigma = sigma.to(torch.float32).cpu()  # the schedule lives on the CPU: no device sync per step
        c_in = (1 / (sigma**2 + 1) ** 0.5).to(x.device)[:, None, None, None]
        t = self.sigma_to_t(sigma).to(x.device)
        dtype = self.unet.dtype
        x_in = x * c_in
        if concat is not None:
            x_in = torch.cat([x_in, concat.to(x_in)], dim=1)
        kwargs = {"added_cond_kwargs": {k: v.to(dtype) for k, v in added_cond.items()}} if added_cond else {}
        control = residuals(x_in, t, cond, added_cond) if residuals is not None else None
        if control is not None:
            down, mid, inside = (*control, None)[:3]
            if down is not None:
                kwargs["down_block_additional_residuals"] = tuple(r.to(dtype) for r in down)
                kwargs["mid_block_additional_residual"] = mid.to(dtype)
            if inside is not None:  # a fresh list: the UNet pops from it
                kwargs["down_intrablock_additional_residuals"] = [r.to(dtype) for r in inside]
        out = self.unet(x_in.to(dtype), t.to(dtype), encoder_hidden_states=cond.to(dtype), return_dict=False,
                        **kwargs)[0].to(x.dtype)
        s = sigma.to(x.device)[:, None, None, None]
        if self.v_prediction:  # k-diffusion's CompVisVDenoiser scalings (sigma_data = 1)
            denoised = x / (s**2 + 1) - out * s / (s**2 + 1) ** 0.5
        else:
            denoised = x - out * s
        return self.scale_output(sigma, denoised, x)

    def scale_output(self, sigma: torch.Tensor, denoised: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return denoised


class LCMDenoiser(DiscreteEpsDenoiser):
    """A1111's LCM denoiser (sd_samplers_lcm.py): the 50 timesteps an LCM was distilled on (every 20th),
    timesteps snapped to them, and the consistency-model boundary scalings around the eps prediction."""

    ORIGINAL_STEPS = 50

    def __init__(self, unet, alphas_cumprod: torch.Tensor):
        n = len(alphas_cumprod)
        self.skip = n // self.ORIGINAL_STEPS
        picked = alphas_cumprod[[n - 1 - i * self.skip for i in reversed(range(self.ORIGINAL_STEPS))]]
        super().__init__(unet, picked)

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        dists = sigma.log() - self.log_sigmas[:, None]
        return (dists.abs().argmin(dim=0).view(sigma.shape) * self.skip + (self.skip - 1)).float()

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        index = ((t - (self.skip - 1)) / self.skip).float().clamp(0, len(self.sigmas) - 1)
        return super().t_to_sigma(index)

    def get_sigmas(self, n: int) -> torch.Tensor:
        t = torch.linspace(float(self.sigma_to_t(self.sigma_max)), float(self.sigma_to_t(self.sigma_min)), n)
        return torch.cat([self.t_to_sigma(t), t.new_zeros([1])])

    def scale_output(self, sigma, denoised, x):
        sigma_data = 0.5
        t = (self.sigma_to_t(sigma) * 10.0).to(x.device)[:, None, None, None]
        c_skip = sigma_data**2 / (t**2 + sigma_data**2)
        c_out = t / (t**2 + sigma_data**2) ** 0.5
        return c_out * denoised + c_skip * x


class CFGDenoiser:
    """Classifier-free guidance over a Conditioning (prompts/conditioning.py): every AND part and the uncond in
    one UNet batch, mixed as A1111's combine_denoised: uncond + Σ weight · scale · (part − uncond).

    `step` counts model calls, as A1111's CFGDenoiser does: prompt editing switches by that count."""

    def __init__(self, model: DiscreteEpsDenoiser, conditioning, cfg_scale: float, on_step=None,
                 time_ids: torch.Tensor | None = None, concat: torch.Tensor | None = None,
                 keep: tuple[torch.Tensor, torch.Tensor] | None = None, patches=None, total_steps: int = 0):
        self.model, self.conditioning, self.cfg_scale = model, conditioning, cfg_scale
        # a job's denoiser-side patches (engine/patches.py): model wrappers, CFG function, CFG hooks
        self.patches, self.total_steps = patches, total_steps
        if patches is not None and patches.unet_residuals:
            def inner(x, sigma, context, added, concat):
                return model(x, sigma, context, added, concat, residuals=self._residuals)
        else:
            inner = model
        self.apply_model = patches.wrapped_model(inner) if patches is not None else inner
        self._rows = (1, 1)  # (prompt parts, images) of the batch in the model call running now
        self.combine = patches.combine() if patches is not None else default_cfg
        # inpainting with an ordinary model: (init latent, mask with 1 where it is kept); every prediction is
        # the init latent there, as A1111's CFGDenoiser blends after denoising
        self.keep = keep
        self.on_step = on_step  # called before every model evaluation: progress and interruption
        # SDXL: (1, 6) original size, crop, target size for every row of the batch; the refiner: (2, 5) original
        # size, crop, aesthetic score, the first row for the prompt's parts, the second for the negative prompt
        self.time_ids = time_ids
        self.concat = concat  # inpainting models: (batch, 5, h, w) mask + masked-image latent
        self.step = 0

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if self.on_step is not None:
            self.on_step()
        conds, weights, uncond = self.conditioning.at_step(self.step)
        pooled = self.conditioning.pooled_at_step(self.step)
        n = x.shape[0]
        sigma = sigma.reshape(-1).expand(n) if sigma.numel() == 1 else sigma
        hooked = self.patches is not None and self.patches.touches_denoiser
        if hooked:
            state = self._hooks("before_model", CFGStep(x, sigma, self.step, self.total_steps, list(conds), uncond,
                                                        self.concat, self.model))
            x, sigma, conds, uncond = state.x, state.sigma, state.conds, state.uncond
        self.step += 1
        parts = len(conds)
        context = torch.cat([c.expand(n, -1, -1) for c in conds] + [uncond.expand(n, -1, -1)])
        added = None
        if pooled is not None:
            part_pooled, uncond_pooled = pooled
            embeds = torch.cat([p.expand(n, -1) for p in part_pooled] + [uncond_pooled.expand(n, -1)])
            ids = self.time_ids.to(embeds.device)
            added = {"text_embeds": embeds,
                     "time_ids": torch.cat([ids[:1].expand(parts * n, -1), ids[-1:].expand(n, -1)])}
        concat = self.concat.repeat(parts + 1, 1, 1, 1) if self.concat is not None else None
        self._rows = (parts, n)
        out = self.apply_model(x.repeat(parts + 1, 1, 1, 1), sigma.repeat(parts + 1), context, added, concat)
        if hooked:
            out = self._hooks("after_model", CFGStep(out, sigma, state.step, self.total_steps, conds, uncond,
                                                     self.concat, self.model)).x
        uncond_out = out[parts * n:]
        denoised = self.combine(CFGArgs([out[i * n:(i + 1) * n] for i in range(parts)], uncond_out, list(weights),
                                        self.cfg_scale, x, sigma))
        if hooked:
            denoised = self._hooks("after_cfg", CFGStep(denoised, sigma, state.step, self.total_steps, conds, uncond,
                                                        self.concat, self.model)).x
        if self.keep is not None:
            init, mask = self.keep
            denoised = init * mask + denoised * (1 - mask)
        return denoised

    def _residuals(self, x_in, t, context, added):
        """Every residual patch's (down, mid) for this model call, summed layer by layer (several ControlNet
        units add up, as the extension does); None when none applies at this step."""
        parts, n = self._rows
        call = ControlCall(x_in[:, :4] if x_in.shape[1] > 4 else x_in, t, context, added, parts, n,
                           self.step - 1, self.total_steps)
        total = None
        for fn in self.patches.unet_residuals:
            got = fn(call)
            if got is None:
                continue
            down, mid, inside = (*got, None)[:3]
            total = (down, mid, inside) if total is None else (
                _add_layers(total[0], down), _add(total[1], mid), _add_layers(total[2], inside))
        return total

    def _hooks(self, which: str, state):
        for fn in getattr(self.patches, which):
            fn(state)
        return state


def _add(a, b):
    return b if a is None else a if b is None else a + b


def _add_layers(a, b):
    """Two lists of per-layer tensors summed layer by layer; either may be None."""
    return b if a is None else a if b is None else [x + y for x, y in zip(a, b)]
