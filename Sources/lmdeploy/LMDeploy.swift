import TurboMind
