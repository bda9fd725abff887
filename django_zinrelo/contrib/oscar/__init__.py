"""django-oscar: an order adapter, refunds from payment events, the award on oscar's dashboard.

Add ``django_zinrelo.contrib.oscar`` to ``INSTALLED_APPS`` (after ``django.contrib.admin``,
before ``oscar.config.Shop``) and see ``docs/oscar.md``. Nothing here is imported by the core
app: a shop without oscar never loads it.
"""
