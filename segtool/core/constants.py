"""Values shared by every step of the pipeline."""

#: Class id of the background in every class map.
BACKGROUND_ID = 0
#: Name labelme gives the background class.
BACKGROUND_NAME = "_background_"
#: Label whose shapes become ignore pixels (labelme's labels.txt convention).
IGNORE_LABEL = "__ignore__"
#: Pixel value that neither losses nor metrics count, for 8-bit masks.
IGNORE_INDEX = 255
#: Pixel value for ignored pixels in 16-bit masks (more than 255 classes).
IGNORE_INDEX_16 = 65535
#: Most classes an 8-bit palette mask can hold next to the ignore value 255.
MAX_CLASSES_8BIT = 255
#: Most classes a 16-bit mask can hold next to the ignore value 65535.
MAX_CLASSES_16BIT = 65535
#: Model modes: one sigmoid channel for two classes, softmax over K channels above.
BINARY = "binary"
MULTICLASS = "multiclass"
#: Mode of multi-label models: one sigmoid channel per foreground class, no background channel.
MULTILABEL = "multilabel"
#: Device names every command accepts (auto: CUDA, then MPS, then the CPU).
DEVICES = ("auto", "cpu", "cuda", "mps")
#: What runs a model in predict: PyTorch (a run, or a TorchScript export) or onnxruntime (an
#: ONNX export folder, written by ``segtool export``).
BACKENDS = ("torch", "onnxruntime")
#: ``segtool export``'s formats, and the ONNX operator set it writes (onnxruntime 1.14 and
#: later run it).
EXPORT_FORMATS = ("onnx", "torchscript")
ONNX_OPSET = 18
#: How the original images reach ``dataset/images``: copied, hard-linked or left out.
IMAGE_MODES = ("copy", "link", "none")
#: Image suffixes segtool pairs with masks (lower case).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
#: Suffix of every label mask.
MASK_SUFFIX = ".png"
#: labelme's line width for `line` and `linestrip` shapes, in pixels.
LINE_WIDTH = 10
#: labelme's radius of a `point` shape, in pixels.
POINT_RADIUS = 5
#: File names inside a dataset folder.
CLASSES_FILE = "classes.json"
REPORT_FILE = "rasterize_report.json"
SPLIT_FILE = "split.json"
IMAGES_DIR = "images"
MASKS_DIR = "masks"
