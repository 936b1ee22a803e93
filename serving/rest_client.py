"""Feature extraction through TF Serving's REST API (port 8501).

    python serving/rest_client.py --model_name=mtssl_demo \
        --output=features.npz photo1.jpg photo2.png

Sends the images (uint8 RGB, any size; the model resizes) to
``POST /v1/models/<model_name>[/versions/<v>]:predict`` in the columnar
format and writes every output (``pooled``, ``block3``, ``mixed_<task>``) to
an ``.npz`` file, row ``i`` for image ``i``. ``--npy`` sends a uint8 array
[N, H, W, 3] instead of image files. The request and response formats are in
:mod:`mtssl_tf.serving_client` and serving/README.md.
"""
import argparse
import sys

import numpy as np

from mtssl_tf import serving_client


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("images", nargs="*", help="image files (JPEG, PNG, ...)")
  parser.add_argument("--npy", help="a .npy file of uint8 images [N, H, W, 3]")
  parser.add_argument("--model_name", default="mtssl_demo")
  parser.add_argument("--host", default="localhost")
  parser.add_argument("--port", type=int, default=serving_client.REST_PORT)
  parser.add_argument("--version", type=int, default=None,
                      help="model version (default: the latest)")
  parser.add_argument("--signature_name", default=serving_client.SIGNATURE_NAME)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--timeout", type=float, default=60.0)
  parser.add_argument("--output", default="features.npz")
  args = parser.parse_args(argv)
  if bool(args.images) == bool(args.npy):
    parser.error("give image files or --npy (one of the two)")
  return args


def main(argv=None) -> int:
  args = parse_args(argv)
  try:
    if args.npy:
      images = list(serving_client.check_images(np.load(args.npy)))
    else:
      images = serving_client.load_images(args.images)
  except (OSError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1

  def predict(batch):
    return serving_client.predict_rest(
        batch, args.model_name, host=args.host, port=args.port,
        version=args.version, signature_name=args.signature_name,
        timeout=args.timeout)

  try:
    features = serving_client.batched_predict(predict, images,
                                              args.batch_size)
  except (ValueError, serving_client.ServingError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  np.savez(args.output, **features)
  for name, value in sorted(features.items()):
    print(f"{name}: {value.shape} {value.dtype}")
  print(f"wrote {args.output}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
