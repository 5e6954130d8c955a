"""Export: a trained run as a SavedModel with its preprocessing inside the graph.

Signatures (each returns `packed_codes` uint8 (B, ceil(K/8)) in the codes-file layout,
`codes` int8 (B, K) of +-1, `embedding` float32 (B, K), `valid` bool (B,) and `status`
int32 (B,); a WSDHQ model also returns `quantization_codes` uint8 (B, M), the codeword
indices its quantizer assigns to the embedding (graph_encoder.py: the database side of
AQD search, while queries use `embedding`), and the loaded object's
`quantization_encoder.codebooks_additive` holds the (M, 256, D) codebooks AQD needs):

* `serving_default(images)`: a batch of encoded JPEG or PNG files (tf.string (B,)).
  Every item is decoded on its own: one bad file never fails the batch. An item is
  valid when it has JPEG or PNG magic bytes, its header's width x height is at most
  the export's pixel limit (`DEFAULT_MAX_PIXELS` unless `--max_pixels` says otherwise;
  checked before decoding, so a decompression bomb costs nothing) and it decodes
  completely (a truncated JPEG or PNG is invalid, as it is for OpenCV in training).
  Two broken files are refused from their headers, without decoding: a PNG whose
  first chunk is not IHDR (e.g. PNG magic followed by a JPEG), and a JPEG far smaller
  than the size its header claims (`jpeg_too_small`: libjpeg would fill the missing
  scan with grey and report success).
  `status` says why an item is invalid (`STATUS_NAMES`). An invalid item has
  `valid = False` and all-zero outputs: zero embedding, zero `codes` (neither +1 nor
  -1), zero `packed_codes` and `quantization_codes`; callers must not index or match
  it by those values.
  A valid image is turned upright by its EXIF orientation tag (JPEG), as OpenCV's
  decoder does in training, then resized to the run's image size (bilinear, aspect
  ratio not kept, rounded to whole pixel values as the training pipeline's uint8
  images are), centre cropped and normalised.
* `encode_images(images)`: float32 (B, S, S, 3) RGB in [0, 255], already cropped to
  the run's crop size S (every item valid).

A model trained on precomputed features (`--backbone=features`) is exported with its
feature model in front (`feature_extractor`, wsdhash/models/extraction_model.py): the
same two signatures, the image preprocessing taking the resize and crop sides and the
normalisation the extraction recorded, then the feature model, then the head. Without
one it has a single signature, `serving_default(features)`: float32 (B, F) features
from the same backbone and settings as the features file (`python -m wsdhash.extract`).
Features extracted with `--ten_crop` are the mean over WSDHQ's 10 crops of the resized
image: the composed `serving_default` does the same, and its `encode_images` then takes
the whole resized image (B, image_size, image_size, 3) rather than a crop.

Beside the graph, `assets.extra/wsdhash.json` records the network's weights fingerprint
(wsdhash/model_fingerprint.py), which the service compares with an index's.

The SavedModel needs only TensorFlow to load (not wsdhash), with `tf.saved_model.load`
or with TensorFlow 1's session loader (`tf.compat.v1.saved_model.load`,
`saved_model_cli run`), which is the path TensorFlow Serving takes. For the latter the
module tracks the model's `tf.Variable`s directly rather than the Keras model: Keras 3
maps each of its variables to a second, unnamed copy when saving, which the TF2 loader
restores but the session loader leaves uninitialised ("Could not find variable").

Modules: `trained_run` (a run folder's model and quantization encoder), `module` (the
exported `tf.Module` and its signatures), `saved_model` (`export_saved_model`, the atomic
write); the header checks and EXIF orientation are in wsdhash/data/image_header.py, beside
the training decoder. `python -m wsdhash.export` is the command
(wsdhash/commands/export.py). This package imports nothing itself, so that importing one
of its modules costs only what that module needs.
"""
