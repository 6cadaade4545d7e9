"""The vision tower of a multimodal checkpoint, priced for image inputs: the tokens an image adds to the prompt
and the encoder's work per image.

Read from the config.json's `vision_config`:
- Kimi K2.5 / K3 (MoonViT): `vt_num_hidden_layers`, `vt_hidden_size`, `vt_intermediate_size`,
  `vt_num_attention_heads`, `patch_size` (14), `merge_kernel_size` ([2, 2]), `text_hidden_size`; the projector
  (`patchmerger`) maps each merged 2 x 2 group of patches through [4h, 4h] and [4h, D] linears (Kimi-VL's
  KimiVLMultiModalProjector).
- Qwen3.5: `depth`, `hidden_size`, `intermediate_size`, `num_heads`, `patch_size` (16), `spatial_merge_size`,
  `out_hidden_size`, with the same merger shape.
An image of W x H pixels is cut into ceil(W / p) x ceil(H / p) patches; the encoder runs every patch through its
layers (a pre-norm ViT: q, k, v, o projections and a two-matrix MLP, full attention among the image's patches);
the merger turns each group of merge x merge patches into one token of the language model, which the prompt
then carries like any other token (prefill work, KV cache).

Shape legend: P = patches of one image, h = tower width, i = tower MLP width, D = the language model's hidden size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from hwmodels.errors import InputError, excerpt


@dataclass(frozen=True)
class ImageInputs:
    """The images of one request (workload.images_per_request, image_width_px, image_height_px)."""

    per_request: int
    width_px: int
    height_px: int


@dataclass(frozen=True)
class VisionTower:
    layers: int
    hidden: int
    intermediate: int
    heads: int
    patch_px: int
    merge: int  # patches per language-model token (2 x 2 = 4)
    text_hidden: int

    def patches(self, width_px: int, height_px: int) -> int:
        return math.ceil(width_px / self.patch_px) * math.ceil(height_px / self.patch_px)

    def tokens_per_image(self, width_px: int, height_px: int) -> int:
        return math.ceil(self.patches(width_px, height_px) / self.merge)

    def matrices(self) -> list[tuple[str, int, int, int]]:
        """(name, rows, cols, count) of the tower's weight matrices: per layer, then the merger (patch embedding and
        norms left out: a few million parameters)."""
        h, i, n, merged = self.hidden, self.intermediate, self.layers, self.hidden * self.merge
        return [("qkv", 3 * h, h, n), ("o", h, h, n), ("mlp_up", i, h, n), ("mlp_down", h, i, n),
                ("merger_1", merged, merged, 1), ("merger_2", self.text_hidden, merged, 1)]

    @property
    def params(self) -> int:
        return sum(r * c * n for _, r, c, n in self.matrices())

    def flops_per_image(self, width_px: int, height_px: int) -> float:
        """2 FLOPs per weight per patch through the layers (per merged token through the merger), plus attention
        among the image's patches: 2 P^2 h for the scores and as many for the values, per layer."""
        patches, tokens = self.patches(width_px, height_px), self.tokens_per_image(width_px, height_px)
        linear = sum(2.0 * r * c * n * (tokens if name.startswith("merger") else patches)
                     for name, r, c, n in self.matrices())
        return linear + 4.0 * patches * patches * self.hidden * self.layers


def vision_tower(config: Mapping[str, Any], where: str) -> VisionTower | None:
    """The tower of a multimodal wrapper config (None without `vision_config`)."""
    vc = config.get("vision_config")
    if vc is None:
        return None
    field = f"{where} vision_config"
    if not isinstance(vc, Mapping):
        raise InputError(field, f"must be a JSON object, got {excerpt(vc)}", "copy vision_config from the checkpoint")

    def get(key: str) -> int:
        value = vc.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 2**20:
            raise InputError(f"{field}.{key}", f"must be a positive whole number, got {excerpt(value)}",
                             "copy it from the checkpoint's config.json")
        return value

    if "vt_hidden_size" in vc:  # MoonViT (Kimi K2.5, K3)
        kernel = vc.get("merge_kernel_size") or [2, 2]
        if not (isinstance(kernel, list) and len(kernel) == 2 and all(isinstance(k, int) and 0 < k <= 64 for k in kernel)):
            raise InputError(f"{field}.merge_kernel_size", f"must be two positive integers, got {excerpt(kernel)}",
                             "e.g. [2, 2]")
        return VisionTower(get("vt_num_hidden_layers"), get("vt_hidden_size"), get("vt_intermediate_size"),
                           get("vt_num_attention_heads"), get("patch_size"), kernel[0] * kernel[1],
                           get("text_hidden_size"))
    if "depth" in vc:  # Qwen3.5 / Qwen3-VL
        merge = get("spatial_merge_size")
        return VisionTower(get("depth"), get("hidden_size"), get("intermediate_size"), get("num_heads"),
                           get("patch_size"), merge * merge, get("out_hidden_size"))
    raise InputError(field, "names no tower moeplan reads (MoonViT's vt_hidden_size or Qwen's depth)",
                     "remove vision_config to plan the text model alone")
