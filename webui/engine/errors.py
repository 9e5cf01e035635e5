"""The base of every error a user can cause (bad file, bad size, unknown sampler): shown as one clear message,
never a traceback, and never leaving the loaded model broken."""


class UserError(Exception):
    pass
