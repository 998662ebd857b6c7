"""Host-side VAE encode/decode of frame stacks of any length, one fixed-size chunk on the device at a time."""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from emo_jax.models.vae import AutoencoderKL


class VAECodec:
    """Scaled latents <-> frames for [N, ...] numpy stacks, in chunks of `chunk` frames.

    The last chunk is zero-padded, so each input dtype/frame size compiles exactly once whatever N is; every
    layer of the VAE works per frame, so padding cannot change the real frames' results.
    """

    def __init__(self, module: AutoencoderKL, params: dict, chunk: int = 8):
        if chunk < 1:
            raise ValueError(f"VAECodec chunk must be at least 1, got {chunk}")
        self.module, self.params, self.chunk = module, params, chunk
        self.config = module.config
        self._encode_chunk = jax.jit(self._encode_fn)
        self._decode_chunk = jax.jit(self._decode_fn, static_argnames="as_uint8")

    def _encode_fn(self, params, frames_NHWC, key, index_N):
        x = frames_NHWC
        if x.dtype == jnp.uint8:
            x = x.astype(jnp.float32) / 127.5 - 1.0
        mean, logvar = self.module.apply({"params": params}, x, method=AutoencoderKL.encode)
        z = mean
        if key is not None:
            # Noise keyed by each frame's index in the whole stack, so a sample does not depend on the chunk size.
            noise = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), mean.shape[1:]))(index_N)
            z = mean + jnp.exp(0.5 * logvar) * noise
        return z * self.config.scaling_factor

    def _decode_fn(self, params, latents_NHWC, as_uint8: bool):
        x = self.module.apply({"params": params}, latents_NHWC / self.config.scaling_factor,
                              method=AutoencoderKL.decode)
        if as_uint8:
            x = jnp.round(jnp.clip((x + 1.0) * 127.5, 0.0, 255.0)).astype(jnp.uint8)
        return x

    def encode(self, frames_NHWC: np.ndarray, key: jax.Array | None = None) -> np.ndarray:
        """Frames (uint8, or float in [-1, 1]) -> latents * scaling_factor: the mean, or a sample given a key."""
        frames = np.asarray(frames_NHWC)
        f, c = self.config.downsample_factor, self.config.in_channels
        if frames.ndim != 4 or frames.shape[-1] != c or frames.shape[1] % f or frames.shape[2] % f:
            raise ValueError(f"VAECodec.encode: frames have shape {frames.shape}; expected [N, H, W, {c}] with H "
                             f"and W multiples of {f}")
        if frames.dtype != np.uint8:
            frames = frames.astype(np.float32)
        return self._stream(lambda block, start: self._encode_chunk(
            self.params, block, key, np.arange(start, start + self.chunk, dtype=np.int32)), frames)

    def decode(self, latents_NHWC: np.ndarray, output: str = "uint8") -> np.ndarray:
        """Latents * scaling_factor -> frames: uint8, or ("float") the decoder's raw float32 output in ~[-1, 1]."""
        if output not in ("uint8", "float"):
            raise ValueError(f"VAECodec.decode: output must be 'uint8' or 'float', not {output!r}")
        latents = np.asarray(latents_NHWC, dtype=np.float32)
        c = self.config.latent_channels
        if latents.ndim != 4 or latents.shape[-1] != c:
            raise ValueError(f"VAECodec.decode: latents have shape {latents.shape}; expected [N, h, w, {c}]")
        return self._stream(lambda block, _: self._decode_chunk(self.params, block, as_uint8=output == "uint8"),
                            latents)

    def _stream(self, run: Callable[[np.ndarray, int], jax.Array], data: np.ndarray) -> np.ndarray:
        """Runs chunk after chunk; one result waits for its copy to the host while the next chunk computes."""
        n = data.shape[0]
        if n == 0:
            raise ValueError("VAECodec: got an empty stack (N = 0); pass at least one frame")
        outputs, pending = [], None
        for start in range(0, n, self.chunk):
            block = data[start:start + self.chunk]
            if len(block) < self.chunk:
                block = np.concatenate([block, np.zeros((self.chunk - len(block),) + block.shape[1:], block.dtype)])
            result = run(block, start)
            if pending is not None:
                outputs.append(np.asarray(pending))
            pending = result
        outputs.append(np.asarray(pending))
        return np.concatenate(outputs)[:n]
