"""Renders the page Horizon serves for a Zun container's console, with the
Horizon installed from Debian (python3-django-horizon and its XStatic
packages), so that a browser test can load it from another web server.

The page is zun-ui's console view: Horizon's serial_console.html rendered
with the console URL the Zun API handed out and protocols
['binary', 'base64']. Django renders it, through Horizon's URLconf (for the
jsi18n catalog), Horizon's static file finders and XStatic mapping (for the
scripts) and django-compressor with Horizon's SCSS filter (for the
stylesheet), as a running Horizon would.

usage: render_console.py CONSOLE_URL CONTAINER_ID OUT_DIR

It writes OUT_DIR/manifest.json: {"page": URL path of the page,
"resources": {URL path: {"file": absolute path, "type": content type}}},
covering the page itself and everything it loads from Horizon. It fails
when the page refers to something it cannot find.
"""

import importlib
import json
import mimetypes
import os
import re
import sys
import types

import django
from django.conf import settings

WEBROOT = "/dashboard/"
STATIC_URL = WEBROOT + "static/"
URLCONF = "console_page_urls"


def configure(out_dir):
    import openstack_dashboard
    from openstack_dashboard.utils import settings as horizon_settings

    dashboard_dir = os.path.dirname(openstack_dashboard.__file__)
    # Horizon maps each XStatic package to horizon/lib/<name>/ under
    # STATIC_URL; only the three the console page loads are needed.
    xstatic = [
        ("xstatic.pkg.jquery", ["jquery.js"]),
        ("xstatic.pkg.angular", ["angular.js"]),
        ("xstatic.pkg.termjs", []),
    ]
    horizon_config = {}
    static_dirs = horizon_settings.get_xstatic_dirs(xstatic, horizon_config)
    # Horizon's own defaults first, as its settings module starts with.
    values = {}
    for name in ("horizon.defaults", "openstack_dashboard.defaults"):
        mod = importlib.import_module(name)
        values.update((k, getattr(mod, k)) for k in dir(mod) if k.isupper())
    values.update(
        DEBUG=False,
        SECRET_KEY="console-page-test",
        ALLOWED_HOSTS=["testserver"],
        ROOT_URLCONF=URLCONF,
        HORIZON_CONFIG=horizon_config,
        MIDDLEWARE=[],
        USE_I18N=True,
        LANGUAGE_CODE="en",
        INSTALLED_APPS=[
            "openstack_dashboard",
            "django.contrib.staticfiles",
            "compressor",
            "horizon",
        ],
        TEMPLATES=[{
            "BACKEND": "django.template.backends.django.DjangoTemplates",
            "DIRS": [os.path.join(dashboard_dir, "templates")],
            "APP_DIRS": True,
            "OPTIONS": {"context_processors": [
                "django.template.context_processors.i18n",
                "django.template.context_processors.request",
                "django.template.context_processors.static",
            ]},
        }],
        STATIC_URL=STATIC_URL,
        STATIC_ROOT=os.path.join(out_dir, "static"),
        STATICFILES_DIRS=static_dirs,
        STATICFILES_FINDERS=[
            "django.contrib.staticfiles.finders.FileSystemFinder",
            "horizon.contrib.staticfiles.finders.HorizonStaticFinder",
            "compressor.finders.CompressorFinder",
        ],
        COMPRESS_ENABLED=True,
        COMPRESS_OFFLINE=False,
        COMPRESS_ROOT=os.path.join(out_dir, "static"),
        COMPRESS_OUTPUT_DIR="dashboard",
        COMPRESS_PRECOMPILERS=(
            ("text/scss", "horizon.utils.scss_filter.HorizonScssFilter"),
        ),
        COMPRESS_CSS_HASHING_METHOD="hash",
        COMPRESS_PARSER="compressor.parser.HtmlParser",
    )
    settings.configure(**values)
    django.setup()


def install_urlconf(console_url):
    """Horizon's own URLs (horizon:jsi18n among them) under WEBROOT, and
    zun-ui's console view at zun-ui's path. Django imports ROOT_URLCONF at
    the first request, after setup()."""
    from django.urls import include, re_path
    from django.views import generic

    class ConsoleView(generic.TemplateView):
        # What zun-ui's SerialConsoleView puts in the context.
        template_name = "serial_console.html"

        def get_context_data(self, **kwargs):
            context = super().get_context_data(**kwargs)
            context["page_title"] = self.kwargs["container_id"]
            context["console_url"] = console_url
            context["protocols"] = "['binary', 'base64']"
            return context

    mod = types.ModuleType(URLCONF)
    mod.urlpatterns = [
        re_path(r"^dashboard/project/container/containers/(?P<container_id>[^/]+)/console$",
                ConsoleView.as_view()),
        re_path(r"^dashboard/", include(("horizon.site_urls", "horizon"), namespace="horizon")),
    ]
    sys.modules[URLCONF] = mod


def main():
    if len(sys.argv) != 4:
        sys.exit("usage: render_console.py CONSOLE_URL CONTAINER_ID OUT_DIR")
    console_url, container_id, out_dir = sys.argv[1:]
    out_dir = os.path.abspath(out_dir)
    configure(out_dir)
    install_urlconf(console_url)

    from django.contrib.staticfiles import finders
    from django.test import Client

    client = Client()
    resources = {}

    def fetch(path):
        resp = client.get(path)
        if resp.status_code != 200:
            sys.exit("GET %s: status %d" % (path, resp.status_code))
        name = os.path.join(out_dir, "r%d" % len(resources))
        with open(name, "wb") as f:
            f.write(resp.content)
        resources[path] = {"file": name, "type": resp["Content-Type"]}
        return resp.content.decode("utf-8")

    page = "%sproject/container/containers/%s/console" % (WEBROOT, container_id)
    html = fetch(page)
    refs = re.findall(r"""<(?:script|link)\b[^>]*?\b(?:src|href)=["']([^"']+)["']""", html)
    if not refs:
        sys.exit("the page refers to no scripts:\n" + html)
    for ref in refs:
        path = ref.split("?")[0]
        if path.startswith(STATIC_URL):
            found = finders.find(path[len(STATIC_URL):])
            if not found:
                sys.exit("the page loads %s, which Horizon's static finders do not find" % ref)
            ctype = mimetypes.guess_type(found)[0] or "application/octet-stream"
            resources[path] = {"file": os.path.realpath(found), "type": ctype}
        elif path.startswith(WEBROOT):
            fetch(path)
        else:
            sys.exit("the page loads %s, which is not Horizon's" % ref)
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump({"page": page, "resources": resources}, f, indent=1)


if __name__ == "__main__":
    main()
