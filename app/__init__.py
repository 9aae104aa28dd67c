"""EffiScope's Qt front end (PySide6 + pyqtgraph): main window, worker link, live charts, history.
The only package that imports Qt; it never imports torch, it draws what the worker's stream says.
"""
