"""The dashboard's re-sync button; in the shop's urls.py:
``path("dashboard/zinrelo/", include("django_zinrelo.contrib.oscar.urls"))``."""

from django.urls import path

from django_zinrelo.contrib.oscar.views import resync

app_name = "zinrelo_oscar"
urlpatterns = [path("orders/<str:number>/resync/", resync, name="resync")]
