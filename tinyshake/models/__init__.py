"""The lecture's models (model.py), the pieces beyond it (modern.py), and the speed layer beside them."""
