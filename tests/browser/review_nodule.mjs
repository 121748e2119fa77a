// The review app of a lung-nodule prediction in headless chromium (driver:
// cdp.mjs). For every nodule: the CT patch image decoded by the browser at
// its stored size with the stored grey levels, the mask outline drawn over
// it where the mask is, the model / baseline values and the drivers in
// order. Then a verdict on one nodule through its own form, seen in that
// nodule's feedback list only; then a status page. Prints a JSON summary;
// exits non-zero on any failed check.
//
// env: REVIEW_URL, PENDING_URL, ACCESS_TOKEN, SCREENSHOT_DIR, CHROMIUM,
//      EXPECT (JSON: {nodules: [{label, probability, lung_rads, brock,
//      top_driver, size, mask_bbox, samples: [{x, y, grey}]}], verdict:
//      {nodule, comment}})
import { env, run } from './cdp.mjs';

const expect = JSON.parse(env.EXPECT);

await run(async ({ evaluate, navigate, submit, screenshot, check }) => {
  await navigate(env.REVIEW_URL);
  const view = await evaluate(`(async () => {
    const q = (sel, root = document) => root.querySelector(sel);
    const t = (sel, root) => { const e = q(sel, root); return e ? e.textContent.trim() : null; };
    const wanted = ${JSON.stringify(expect.nodules)};
    const nodules = [];
    for (const sec of document.querySelectorAll('section.nodule')) {
      const img = q('img.patch-image', sec);
      const svg = q('svg.patch-overlay', sec);
      const path = q('path.mask-outline', sec);
      const w = wanted.find((n) => n.label === t('h2', sec));
      let grey = [];
      if (img && w) {
        await img.decode().catch(() => {});
        // Read the decoded pixels back (a data: image does not taint the canvas).
        const c = document.createElement('canvas');
        c.width = img.naturalWidth; c.height = img.naturalHeight;
        const ctx = c.getContext('2d');
        ctx.drawImage(img, 0, 0);
        const data = ctx.getImageData(0, 0, c.width, c.height).data;
        grey = w.samples.map((s) => data[(s.y * c.width + s.x) * 4]);
      }
      const box = (e) => { if (!e) return null; const r = e.getBoundingClientRect(); return [r.width, r.height]; };
      const bb = path && path.getBBox();
      nodules.push({
        id: sec.id,
        card: sec.getAttribute('data-card'),
        label: t('h2', sec),
        imgComplete: !!img && img.complete,
        natural: img ? [img.naturalWidth, img.naturalHeight] : null,
        imgBox: box(img),
        svgBox: box(svg),
        pathD: path ? path.getAttribute('d') : null,
        pathBox: box(path),
        pathBBox: bb ? [bb.x, bb.y, bb.x + bb.width, bb.y + bb.height] : null,
        declaredBBox: path ? path.getAttribute('data-mask-bbox') : null,
        grey,
        probability: t('.model-probability', sec),
        lungRads: t('.lung-rads', sec),
        brock: t('.brock', sec),
        review: t('.nodule-review', sec),
        drivers: [...sec.querySelectorAll('tr.driver td:first-child')].map((e) => e.textContent),
        radiomics: !!q('details.radiomics', sec),
        form: !!q('form.verdict-form', sec),
      });
    }
    return {
      title: document.title,
      renderedNotice: !!q('#rendered-pixels'),
      source: t('#source-label'),
      scripts: document.scripts.length,
      nodules,
    };
  })()`);
  check('page title', view.title === 'Review', view.title);
  check('rendered-pixel notice', view.renderedNotice, view.source);
  check('no scripts', view.scripts === 0, view.scripts);
  check('one section per nodule', view.nodules.length === expect.nodules.length, view.nodules.length);
  for (const want of expect.nodules) {
    const got = view.nodules.find((n) => n.label === want.label);
    const name = want.label;
    check(`${name}: shown`, !!got, view.nodules.map((n) => n.label));
    if (!got) continue;
    check(`${name}: patch decoded at its size`, got.imgComplete && got.natural[0] === want.size && got.natural[1] === want.size, got.natural);
    check(`${name}: patch drawn`, got.imgBox[0] >= 128 && got.imgBox[1] >= 128, got.imgBox);
    check(`${name}: overlay covers the patch`, got.svgBox[0] === got.imgBox[0] && got.svgBox[1] === got.imgBox[1], got.svgBox);
    check(`${name}: stored grey levels`, want.samples.every((s, i) => Math.abs(got.grey[i] - s.grey) <= 2),
      { want: want.samples, got: got.grey });
    check(`${name}: outline drawn`, !!got.pathD && got.pathBox[0] > 0 && got.pathBox[1] > 0, got.pathBox);
    check(`${name}: outline around the mask`, JSON.stringify(got.pathBBox) === JSON.stringify(want.mask_bbox)
      && got.declaredBBox === want.mask_bbox.join(' '), { drawn: got.pathBBox, declared: got.declaredBBox });
    check(`${name}: probability`, (got.probability || '').startsWith(want.probability), got.probability);
    check(`${name}: Lung-RADS`, (got.lungRads || '').startsWith(want.lung_rads), got.lungRads);
    check(`${name}: Brock`, (got.brock || '').startsWith(want.brock), got.brock);
    check(`${name}: largest driver first`, got.drivers[0] === want.top_driver, got.drivers);
    check(`${name}: review reason`, (got.review || '').length > 20, got.review);
    check(`${name}: all radiomics, folded`, got.radiomics, got.radiomics);
    check(`${name}: verdict form`, got.form, got.form);
  }
  const before = await screenshot('review-nodule.png');

  // A verdict on one nodule, through that nodule's form.
  const n = expect.verdict.nodule;
  await evaluate(`(() => {
    document.querySelector('#verdict-form-${n} input[name=verdict][value=disagree]').click();
    document.querySelector('#comment-${n}').value = ${JSON.stringify(expect.verdict.comment)};
  })()`);
  await submit(`document.querySelector('#submit-verdict-${n}').click()`);
  const after = await evaluate(`(() => {
    const items = (id) => [...document.querySelectorAll('#' + id + ' .feedback-item')].map((e) => ({
      outcome: e.querySelector('.feedback-outcome').textContent,
      comment: e.querySelector('.feedback-comment').textContent,
    }));
    return {
      url: location.href,
      saved: !!document.querySelector('#saved'),
      perNodule: [...document.querySelectorAll('section.nodule')].map((s) => ({ id: s.id, items: items(s.id) })),
    };
  })()`);
  check('redirected back to the nodule with saved=1', after.url.endsWith(`?saved=1#nodule-${n}`), after.url);
  check('saved banner', after.saved, after.saved);
  for (const s of after.perNodule) {
    if (s.id === `nodule-${n}`) {
      check(`verdict listed on ${s.id}`, s.items.length === 1 && s.items[0].outcome === 'overridden'
        && s.items[0].comment === expect.verdict.comment, s.items);
    } else {
      check(`no verdict on ${s.id}`, s.items.length === 0, s.items);
    }
  }
  const saved = await screenshot('review-nodule-saved.png');

  await navigate(env.PENDING_URL);
  const pending = await evaluate(`(() => ({
    status: document.querySelector('#status') && document.querySelector('#status').getAttribute('data-status'),
    text: document.querySelector('#status') && document.querySelector('#status').textContent,
    nodules: document.querySelectorAll('section.nodule').length,
  }))()`);
  check('pending status page', pending.status === 'imaging_pending' && /still being analysed/.test(pending.text) && pending.nodules === 0, pending);
  const pendingShot = await screenshot('review-nodule-pending.png');
  return { view, after, pending, screenshots: [before, saved, pendingShot] };
});
