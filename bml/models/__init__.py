"""bml's models: encoders (encoders.py), fusion heads (fusion.py) and the models around them (model.py)."""
