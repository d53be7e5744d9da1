"Real-browser test: JupyterLab + headless Chromium run the inspector notebook on a tiny demo corpus and react to widget changes."
import json, os, re, shutil, signal, socket, subprocess, sys, time, urllib.request, uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                 '--disable-background-networking', '--disable-component-update', '--disable-sync']
SCREENSHOT_COPY = Path('/tmp/inspector_screenshot.png')


def _chromium() -> str | None:
    "System Chromium (Debian package) or another Chrome; Playwright never downloads a browser here."
    env = os.environ.get('MEDKLIP_CHROMIUM')
    if env: return env if Path(env).exists() else None
    for name in ('/usr/bin/chromium', 'chromium', 'chromium-browser', 'google-chrome'):
        p = shutil.which(name)
        if p: return p
    return None


def _free_port() -> int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    "A JupyterLab server on 127.0.0.1 serving a copy of nbs/inspector.ipynb beside a tiny demo corpus; stopped (process group) at teardown."
    if _chromium() is None: pytest.skip("no chromium: run tools/ci_browser_setup.sh (apt-get install chromium) or set MEDKLIP_CHROMIUM")
    pytest.importorskip('playwright.sync_api', reason="python package playwright missing: pip install -c constraints.txt playwright")
    if not (BIN/'jupyter-lab').exists(): pytest.skip(f"jupyter-lab not installed in {BIN}")
    root, home = tmp_path/'root', tmp_path/'home'
    root.mkdir(); home.mkdir()
    nb = json.loads((REPO/'nbs'/'inspector.ipynb').read_text())
    nb['metadata']['kernelspec'] = dict(name='python3', display_name='Python 3', language='python')
    (root/'inspector.ipynb').write_text(json.dumps(nb))
    from medklip.data.demo import DemoParams, generate_demo   # the notebook reads ../data/demo: the picker gets splits and findings
    generate_demo(tmp_path/'data'/'demo', DemoParams(seed=0, n_patients=10, studies_per_patient=(1, 2), size=(128, 160), unseen_rate=0.0))
    # user settings: start the notebook's kernel without a dialog, no news/update requests, no toasts
    for plugin, conf in {'notebook-extension/tracker': dict(autoStartDefaultKernel=True),
                         'apputils-extension/notification': dict(fetchNews='false', checkForUpdates=False, doNotDisturbMode=True)}.items():
        f = home/'settings'/'@jupyterlab'/f'{plugin}.jupyterlab-settings'
        f.parent.mkdir(parents=True, exist_ok=True); f.write_text(json.dumps(conf))
    token, port = uuid.uuid4().hex, _free_port()
    env = {**os.environ, 'HF_HUB_OFFLINE': '1', 'JUPYTER_CONFIG_DIR': str(home/'config'),
           'JUPYTER_DATA_DIR': str(home/'data'), 'JUPYTER_RUNTIME_DIR': str(home/'runtime'),
           'JUPYTERLAB_SETTINGS_DIR': str(home/'settings'), 'JUPYTERLAB_WORKSPACES_DIR': str(home/'workspaces'),
           'IPYTHONDIR': str(home/'ipython'), 'PATH': f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    log = open(tmp_path/'lab.log', 'w')
    proc = subprocess.Popen([str(BIN/'jupyter'), 'lab', '--no-browser', f'--ServerApp.token={token}',
                             '--ServerApp.ip=127.0.0.1', f'--ServerApp.port={port}', '--ServerApp.port_retries=0',
                             f'--ServerApp.root_dir={root}', '--allow-root',
                             '--LabApp.news_url=', '--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate'],
                            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f'http://127.0.0.1:{port}'
        deadline = time.time() + 30
        while True:
            try:
                urllib.request.urlopen(f'{url}/api/status?token={token}', timeout=2); break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail(f"JupyterLab did not start:\n{(tmp_path/'lab.log').read_text()[-3000:]}")
                time.sleep(0.3)
        yield dict(url=url, token=token, root=root, tmp=tmp_path)
    finally:
        try: os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError: pass
        try: proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL); proc.wait(5)
        log.close()


# each <img> of the widget drawn to a canvas: compares pixels, not blob: URLs
_IMG_DATA = """() => Array.from(document.querySelectorAll('img.widget-image')).map(im => {
  const c = document.createElement('canvas'); c.width = im.naturalWidth; c.height = im.naturalHeight;
  c.getContext('2d').drawImage(im, 0, 0); return c.toDataURL(); })"""


def _text(locator) -> str: return locator.inner_text().replace('\xa0', ' ')   # ipywidgets writes option spaces as NBSP


def _settle(page, timeout=30_000):
    "Wait until the kernel has handled every widget message sent so far (the toolbar's execution indicator reads idle)."
    page.wait_for_timeout(300)
    page.wait_for_function("() => document.querySelector('.jp-Notebook-ExecutionIndicator')?.dataset.status === 'idle'", timeout=timeout)


@pytest.mark.serial
def test_inspector_in_jupyterlab(lab):
    from playwright.sync_api import sync_playwright
    t0 = time.time()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=dict(width=1400, height=1000))
            page.goto(f"{lab['url']}/lab/tree/inspector.ipynb?token={lab['token']}", timeout=30_000)
            page.wait_for_selector('.jp-Notebook .jp-Cell', timeout=30_000)
            page.locator('.jp-StatusBar-Widget', has_text='Idle').first.wait_for(timeout=30_000)   # kernel started
            dialog = page.locator('.jp-Dialog').get_by_role('button', name='Select')   # in case a kernel dialog shows
            if dialog.count(): dialog.click()
            # Run ▸ Run All Cells from the menu bar
            page.locator('#jp-MainMenu').get_by_text('Run', exact=True).click()
            page.locator('.lm-Menu-content').get_by_text('Run All Cells', exact=True).click()
            imgs = page.locator('img.widget-image')
            imgs.nth(1).wait_for(timeout=45_000)             # one panel per initially selected entity
            page.wait_for_function("() => Array.from(document.querySelectorAll('img.widget-image'))"
                                   ".every(i => i.complete && i.naturalWidth > 0)", timeout=15_000)
            before = page.evaluate(_IMG_DATA)
            assert len(before) == 2 and before[0] != before[1]

            # type a description and press Enter: a third panel with its own heatmap appears
            box = page.get_by_placeholder('free-text description', exact=False)
            box.fill('fluid in the left pleural space'); box.press('Enter')
            imgs.nth(2).wait_for(timeout=20_000)
            page.wait_for_function("() => Array.from(document.querySelectorAll('img.widget-image'))"
                                   ".every(i => i.complete && i.naturalWidth > 0)", timeout=15_000)
            after_text = page.evaluate(_IMG_DATA)
            assert len(after_text) == 3 and after_text[2] not in before
            assert page.get_by_text('fluid in the left pleural space').first.is_visible()

            # move the opacity slider with the keyboard: every overlay is re-rendered
            handle = page.locator('.widget-slider', has=page.get_by_text('opacity', exact=True)).locator('.noUi-handle')
            handle.focus()
            for _ in range(4): handle.press('ArrowRight')
            page.wait_for_function(f"(prev) => {{ const now = ({_IMG_DATA})(); return now.length === 3 && now[0] !== prev[0]; }}",
                                   arg=after_text, timeout=15_000)
            page.wait_for_timeout(300)                       # let the last re-render settle before the picture
            imgs.nth(0).scroll_into_view_if_needed(timeout=5_000)
            shot = lab['tmp']/'inspector.png'
            page.screenshot(path=str(shot), full_page=True)
            shutil.copy(shot, SCREENSHOT_COPY)
            text = page.locator('.jp-Notebook').inner_text()
            assert 'existence score' in text and 'Error' not in text.split('existence score')[0][-200:]

            # sliders are usable: a few hundred pixels, not ~30
            assert handle.locator('xpath=ancestor::div[contains(@class, "widget-slider")][1]').bounding_box()['width'] >= 250

            # shared colour scale (default): only the hottest panel reaches the top, scores and peaks differ
            peaks = [int(re.search(r'peak (\d+) %', t).group(1)) for t in page.locator('.medklip-peak').all_inner_texts()]
            scores = [float(x) for x in re.findall(r'existence score ([0-9.]+)', text)]
            assert len(peaks) == 3 and max(peaks) == 100 and len(set(peaks)) > 1, peaks
            assert len(set(scores[:2])) == 2, scores
            assert page.locator('.medklip-colorbar').first.is_visible()
            # panels scored below their threshold (0.5: the random model has no report) are dimmed, the others not
            assert page.locator('.medklip-below').count() == sum(s < 0.5 for s in scores[:3])
            # per-panel stretching is an explicit toggle: every panel then peaks at 100 %, pictures re-rendered
            shared = page.evaluate(_IMG_DATA)
            page.get_by_role('button', name='per panel').click()
            page.wait_for_function("() => Array.from(document.querySelectorAll('.medklip-peak')).every(e => e.textContent.includes('peak 100 %'))", timeout=15_000)
            assert page.get_by_text('NOT comparable', exact=False).first.is_visible()
            page.wait_for_function(f"(prev) => {{ const now = ({_IMG_DATA})(); return now.length === 3 && now.some((d, i) => d !== prev[i]); }}",
                                   arg=shared, timeout=15_000)

            # the picker: short labels, and the split filter reduces the options
            image_opts = page.locator('.widget-dropdown', has=page.locator('label', has_text=re.compile(r'^image$'))).locator('select option')
            n_all = image_opts.count()
            assert n_all > 3 and _text(image_opts.nth(1)).startswith('study ')
            page.locator('.widget-dropdown', has=page.locator('label', has_text=re.compile(r'^split$'))).locator('select').select_option(label='test')
            page.wait_for_function(f"() => Array.from(document.querySelectorAll('.widget-dropdown')).some(d => d.querySelector('label')?.textContent === 'image' && d.querySelectorAll('option').length < {n_all})", timeout=15_000)
            assert 1 < image_opts.count() < n_all and all(' · test · ' in _text(image_opts.nth(i)) for i in range(1, image_opts.count()))

            # nothing selected: the hint appears (only once the kernel is idle: one CI run ended with a cleared selection's
            # panels still up, perhaps because clear overlapped the re-scoring of the filtered list's image; not proven)
            _settle(page)
            page.get_by_role('button', name='clear selection').click()
            _settle(page)
            # one step at a time: the typed description's panel alone must be left before the text is emptied too (one CI run
            # ended showing the two entity panels with 'selected: none' after clear and an emptied box had followed each other
            # closely; waiting here keeps the two children changes of the panel box apart and shows which one went wrong)
            page.get_by_text('selected: none', exact=False).first.wait_for(timeout=15_000)
            page.wait_for_function("() => document.querySelectorAll('img.widget-image').length === 1", timeout=15_000)
            assert 'fluid in the left pleural space' in page.locator('.jp-Notebook').inner_text()
            box.fill(''); box.press('Enter')
            page.get_by_text('choose an entity', exact=False).first.wait_for(timeout=30_000)
            # the widget messages arrive in order but the views update asynchronously: give the panels time to go
            page.wait_for_function("() => document.querySelectorAll('img.widget-image').length === 0", timeout=15_000)
            assert page.get_by_text('choose an entity', exact=False).first.is_visible() and page.locator('img.widget-image').count() == 0
        except Exception:
            fail = lab['tmp']/'inspector_failure.png'
            page.screenshot(path=str(fail), full_page=True)
            shutil.copy(fail, '/tmp/inspector_failure.png')
            raise
        finally:
            browser.close()
    assert time.time() - t0 < 90, f"browser test took {time.time() - t0:.0f} s"
