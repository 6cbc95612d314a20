"""``genfleet ui``: a web app that shows jobs and what they made.

``app`` holds the routes, ``pages`` the job list and job page values, ``content``
one view per job kind, ``files`` the pictures it may serve, ``security`` the
credential and headers. Templates and the one small script are in ``templates/``
and ``static/``; nothing needs building.
"""
