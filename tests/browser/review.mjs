// The review app of a cachexia prediction in headless chromium (driver:
// cdp.mjs): checks that values and trend plots rendered, records a verdict
// through the form, checks the page shows it, and saves screenshots.
// Prints a JSON summary; exits non-zero on any failed check.
//
// env: REVIEW_URL, DASHBOARD_URL, ACCESS_TOKEN (sent as Authorization header),
//      SCREENSHOT_DIR, CHROMIUM (default: chromium), EXPECT_PATIENT,
//      VERDICT_COMMENT
import { env, run } from './cdp.mjs';

await run(async ({ evaluate, navigate, submit, screenshot, check }) => {
  await navigate(env.REVIEW_URL);
  const view = await evaluate(`(() => {
    const q = (sel) => document.querySelector(sel);
    const pts = (id) => document.querySelectorAll('#' + id + ' circle.point').length;
    return {
      title: document.title,
      tier: q('#risk-tier') && q('#risk-tier').textContent,
      risk: q('#risk-value') && q('#risk-value').textContent,
      review: q('#review') && q('#review').textContent,
      patient: q('#patient') && q('#patient').textContent,
      weightPoints: pts('trend-weight'),
      albuminPoints: pts('trend-albumin'),
      crpPoints: pts('trend-crp'),
      weightDeclared: q('#trend-weight') && Number(q('#trend-weight').getAttribute('data-points')),
      polylines: document.querySelectorAll('svg.chart polyline').length,
      indices: document.querySelectorAll('#indices tr.index').length,
      form: !!q('#verdict-form'),
      scripts: document.scripts.length,
    };
  })()`);
  check('page title', view.title === 'Review', view.title);
  check('risk tier shown', /^(low|elevated|high|unknown)$/.test(view.tier || ''), view.tier);
  check('risk value cell', (view.risk || '').length > 0, view.risk);
  check('patient shown', view.patient === env.EXPECT_PATIENT, view.patient);
  check('weight trend plotted', view.weightPoints >= 2 && view.weightPoints === view.weightDeclared, view.weightPoints);
  check('albumin trend plotted', view.albuminPoints >= 1, view.albuminPoints);
  check('crp trend plotted', view.crpPoints >= 1, view.crpPoints);
  check('lines drawn', view.polylines >= 3, view.polylines);
  check('classic indices listed', view.indices >= 4, view.indices);
  check('verdict form present', view.form, view.form);
  check('no scripts', view.scripts === 0, view.scripts);
  const before = await screenshot('review-app.png');

  // Record a verdict through the form (a real form POST, then the redirect).
  const comment = env.VERDICT_COMMENT || 'Disagree: weight loss explained by recent surgery';
  await evaluate(`(() => {
    document.querySelector('input[name=verdict][value=disagree]').click();
    document.querySelector('#comment').value = ${JSON.stringify(comment)};
  })()`);
  await submit(`document.querySelector('#submit-verdict').click()`);
  const after = await evaluate(`(() => ({
    url: location.href,
    saved: !!document.querySelector('#saved'),
    outcomes: [...document.querySelectorAll('.feedback-item .feedback-outcome')].map((e) => e.textContent),
    comments: [...document.querySelectorAll('.feedback-item .feedback-comment')].map((e) => e.textContent),
  }))()`);
  check('redirected back with saved=1', after.url.endsWith('?saved=1'), after.url);
  check('saved banner', after.saved, after.saved);
  check('verdict listed as overridden', after.outcomes.includes('overridden'), after.outcomes);
  check('comment listed', after.comments.includes(comment), after.comments);
  const saved = await screenshot('review-app-saved.png');

  let dashboard = null;
  if (env.DASHBOARD_URL) {
    await navigate(env.DASHBOARD_URL);
    dashboard = await evaluate(`(() => ({
      groups: document.querySelectorAll('section.group').length,
      bars: document.querySelectorAll('svg.chart rect.bar').length,
      volume: document.querySelector('section.group .volume') && document.querySelector('section.group .volume').textContent,
    }))()`);
    check('dashboard group', dashboard.groups >= 1, dashboard);
    check('dashboard bars', dashboard.bars >= 2, dashboard.bars);
    await screenshot('dashboard.png');
  }
  return { view, after, dashboard, screenshots: [before, saved] };
});
