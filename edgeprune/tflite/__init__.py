"""The .tflite file without TensorFlow: its graph, its weights, TFLite-Micro's arena plan."""
