"""Feature extraction through TF Serving's gRPC API (port 8500).

    pip install tensorflow-serving-api==2.20.0
    python serving/grpc_client.py --model_name=mtssl_demo \
        --output=features.npz photo1.jpg photo2.png

Sends the images (uint8 RGB, any size; the model resizes) as a
``PredictRequest`` to ``PredictionService.Predict`` and writes every output
(``pooled``, ``block3``, ``mixed_<task>``) to an ``.npz`` file, row ``i`` for
image ``i``. ``--npy`` sends a uint8 array [N, H, W, 3] instead of image
files. gRPC sends tensors as bytes, so it is the faster of the two clients
for large outputs such as the block-3 maps.
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
  parser.add_argument("--target", default=f"localhost:{serving_client.GRPC_PORT}",
                      help="host:port of the gRPC API")
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
  channel = serving_client.grpc_channel(args.target)

  def predict(batch):
    return serving_client.predict_grpc(
        batch, args.model_name, target=args.target, version=args.version,
        signature_name=args.signature_name, timeout=args.timeout,
        channel=channel)

  try:
    features = serving_client.batched_predict(predict, images,
                                              args.batch_size)
  except (ValueError, serving_client.ServingError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  finally:
    channel.close()
  np.savez(args.output, **features)
  for name, value in sorted(features.items()):
    print(f"{name}: {value.shape} {value.dtype}")
  print(f"wrote {args.output}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
