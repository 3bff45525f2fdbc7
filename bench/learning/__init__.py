"""Helpers of bench/learning_curve.py: style axes and tastes, the steerable stand-in model, the
simulated user, the arm runner and the tiny pretrained model of the weight path."""
