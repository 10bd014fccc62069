"""The YOLO kind (Ultralytics YOLOv12/11 networks, the optional `yolo` extra): winding video.

kind.py (bundle, predictor, export), net.py (YoloNet), module.py (YoloModule: the training
recipe), predictor.py (letterbox -> eager/ONNX network -> NMS, behind the shared box
predictor), export.py, and its own: boxes.py (letterbox + NMS), recipe.py, callbacks.py,
adapter.py (every Ultralytics import). Prediction, evaluation and reports are the box
kinds' shared ones (`defects.kinds.detection`): only the network and its pre/post-processing
differ from Faster R-CNN.
"""
