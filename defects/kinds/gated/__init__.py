"""The gated segmentation kind: an EfficientNet gate + Unet/LinkNet (smp), steel and pipe.

kind.py (bundle, predictor, export), net.py (Segmenter and its parts), module.py
(SegmentationModule), predictor.py (SegmentationPredictor), export.py (one ONNX graph per
part), and its own: flow.py (the gated flow, eager or ONNX Runtime), thresholds.py,
evaluate.py (Kaggle Dice, threshold tuning), writer.py (masks and submission).
"""
