"""The Faster R-CNN kind (torchvision): weld radiographs, NEU-DET, any YOLO-layout boxes.

kind.py (the bundle, predictor and export of this kind), net.py (Detector), module.py
(DetectionModule), predictor.py (the ONNX runner; eager runs the Detector itself),
export.py (the traceable copy and its ONNX graph). Prediction, evaluation and reports are
the box kinds' shared ones (`defects.kinds.detection`).
"""
