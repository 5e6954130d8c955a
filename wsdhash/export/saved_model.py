"""Writes a trained model as a SavedModel, atomically (`export_saved_model`)."""

from __future__ import annotations

import json
import os
import shutil

import keras
import tensorflow as tf

from wsdhash import atomic_files
from wsdhash.data.image_header import DEFAULT_MAX_PIXELS
from wsdhash.export.module import HashingServingModule
from wsdhash.model_fingerprint import EXPORT_INFO_FILE, weights_fingerprint


def export_saved_model(
    model: keras.Model,
    pipeline_config,
    output: str,
    overwrite: bool = False,
    quantization_encoder=None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    feature_extractor=None,
    info: dict | None = None,
) -> str:
    """Writes the SavedModel to `output` atomically (a temporary folder, then a rename).

    Args:
        quantization_encoder: `load_quantization_encoder(...)` for WSDHQ runs; adds the
            `quantization_codes` output.
        max_pixels: the largest width x height the image signature decodes.
        feature_extractor: a model on features served by image (`HashingServingModule`);
            `pipeline_config` then holds the extraction's resize and crop sides.
        info: more entries for `EXPORT_INFO_FILE` (e.g. the feature model's SHA-256).

    Returns:
        `output`.
    """
    output = os.path.abspath(output)
    if os.path.exists(output) and not overwrite:
        raise FileExistsError(f"{output} exists; pass overwrite=True (--overwrite) to replace it.")
    module = HashingServingModule(
        model,
        pipeline_config.image_size,
        pipeline_config.crop_size,
        quantization_encoder,
        max_pixels=max_pixels,
        feature_extractor=feature_extractor,
    )
    parent = os.path.dirname(output)
    os.makedirs(parent, exist_ok=True)
    temporary = atomic_files.building_folder(output)
    try:
        tf.saved_model.save(
            module,
            temporary,
            signatures=(
                {"serving_default": module.serving_default}
                if module.takes_features
                else {
                    "serving_default": module.serving_default,
                    "encode_images": module.encode_images,
                }
            ),
        )
        # Which network this is, for the service's fit check against an index.
        info_path = os.path.join(temporary, EXPORT_INFO_FILE)
        os.makedirs(os.path.dirname(info_path), exist_ok=True)
        with open(info_path, "w", encoding="utf-8") as f:
            # The head's fingerprint also for a composed model: it is what the run's
            # codes file (and an index built from it) records.
            json.dump({"model_fingerprint": weights_fingerprint(model), **(info or {})}, f)
        atomic_files.replace_folder(temporary, output)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return output
