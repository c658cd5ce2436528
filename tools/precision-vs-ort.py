"""vqad's INT8 prior beside ONNX Runtime's own quantizer (onnxruntime.quantization.quantize_static,
QDQ, per-channel int8 weights, uint8 activations, convolutions only, dedicated Q/DQ pairs) with
its MinMax, Percentile and Entropy calibration: the log-prob SQNR (dB) and argmax agreement of
each against the FP32 prior, on index tables of held-out normal images. An independent check of
vqad's QDQ writer, and of whether the calibration method is a lever.

    $VQAD_PYTHON tools/precision-vs-ort.py PACKAGE.vqad NORMAL_IMAGES_DIR [CALIBRATION_COUNT]

The package must carry the int8 variant. The first CALIBRATION_COUNT images (default 20)
calibrate ONNX Runtime's quantizer; the rest are compared on.
"""
import glob, json, os, sys, tempfile, zipfile

import cv2
import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

pkg, folder = sys.argv[1], sys.argv[2]
ncal = int(sys.argv[3]) if len(sys.argv) > 3 else 20
tmp = tempfile.mkdtemp()
z = zipfile.ZipFile(pkg)
for n in ["encoder.onnx", "pixelsnail.onnx", "pixelsnail.int8.onnx"]:
    open(os.path.join(tmp, n), "wb").write(z.read(n))
m = json.loads(z.read("manifest.json"))["model"]
s, c = m["image_size"], m["channels"]


def load(f):
    im = cv2.imread(f, cv2.IMREAD_COLOR if c == 3 else cv2.IMREAD_GRAYSCALE)
    if c == 3:
        im = cv2.cvtColor(im, cv2.COLOR_BGR2RGB)
    im = cv2.resize(im, (s, s), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    return im.transpose(2, 0, 1) if c == 3 else im[None]


files = sorted(glob.glob(os.path.join(folder, "*.png")) + glob.glob(os.path.join(folder, "*.jpg")))
X = np.stack([load(f) for f in files])
sess = lambda f: ort.InferenceSession(os.path.join(tmp, f), providers=["CPUExecutionProvider"])
enc = sess("encoder.onnx")
Z = np.concatenate([enc.run(None, {"image": X[i:i + 8]})[0] for i in range(0, len(X), 8)])
cal, ev = Z[:ncal], Z[ncal:]
assert len(ev) > 0, "need more images than CALIBRATION_COUNT"


class Reader(CalibrationDataReader):
    def __init__(self):
        self.i = 0

    def get_next(self):
        if self.i >= len(cal):
            return None
        self.i += 1
        return {"indices": cal[self.i - 1:self.i]}


run = lambda s_: np.concatenate([s_.run(None, {"indices": ev[i:i + 8]})[0] for i in range(0, len(ev), 8)]).astype(np.float64)
ref = run(sess("pixelsnail.onnx"))


def figures(f):
    v = run(sess(f))
    return 10 * np.log10((ref ** 2).sum() / ((ref - v) ** 2).sum()), (ref.argmax(1) == v.argmax(1)).mean()


print(f"{len(files)} images: {ncal} calibrate ONNX Runtime's quantizer, {len(ev)} compared on")
print("vqad int8 prior:             SQNR %.2f dB, argmax agreement %.4f" % figures("pixelsnail.int8.onnx"))
for meth in [CalibrationMethod.MinMax, CalibrationMethod.Percentile, CalibrationMethod.Entropy]:
    out = f"ort_{meth.name}.onnx"
    quantize_static(os.path.join(tmp, "pixelsnail.onnx"), os.path.join(tmp, out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["Conv"], calibrate_method=meth,
                    extra_options={"DedicatedQDQPair": True})
    print(f"onnxruntime {meth.name:<11}      SQNR %.2f dB, argmax agreement %.4f" % figures(out))
