// The demo's Segment mode (/demo/?tracking=segment): the page tracks through Segment's browser
// SDK, analytics-next, as a shop already on Segment does, and the SDK posts to this service's
// Segment routes (/v1/t, /v1/i, ...). Nothing comes from Segment's CDN: the service serves the
// SDK's files (DEMO_SEGMENT_SDK), the SDK's settings are given here (cdnSettings), and its
// Segment.io destination is pointed at this origin (apiHost, protocol).
const CDN = `${location.origin}/demo/segment`;

function loadScript(src) {
  return new Promise((resolve, reject) => {
    const script = Object.assign(document.createElement("script"), { src, async: true });
    script.onload = resolve;
    script.onerror = () => reject(new Error(`${src} did not load: start the service with DEMO_SEGMENT_SDK`));
    document.head.append(script);
  });
}

/** The E-commerce Spec's call for one of the page's actions on a product. */
function specCall(product, type) {
  const item = { product_id: product.asin, category: product.category, brand: product.brand ?? undefined, price: product.price ?? undefined };
  switch (type) {
    case "click": return ["Product Clicked", item];
    case "add_to_cart": return ["Product Added", { ...item, quantity: 1 }];
    case "purchase": return ["Order Completed", { order_id: `demo-${Date.now()}`, total: product.price ?? undefined, products: [{ ...item, quantity: 1 }] }];
    default: return ["Product Viewed", item];
  }
}

/** Throws when the SDK could not deliver the call (it may still retry it). */
function failed(context) {
  const failure = context.failedDelivery();
  if (failure) throw new Error(String(failure.reason));
}

/** A tracker like the page's own client, over analytics-next: the same calls, Segment's wire. */
export async function segmentTracker(writeKey) {
  // Where the SDK loads the parts it needs later from, read when its script runs.
  window.analytics = { _cdn: CDN };
  await loadScript(`${CDN}/analytics-next/bundles/index.js`);
  const [analytics] = await window.AnalyticsNext.AnalyticsBrowser.load(
    { writeKey, cdnURL: CDN, cdnSettings: { integrations: { "Segment.io": { apiKey: writeKey } } } },
    { integrations: { "Segment.io": { apiHost: `${location.host}/v1`, protocol: location.protocol.replace(":", "") } } },
  );
  // As Segment's snippet leaves it: the SDK at window.analytics.
  window.analytics = analytics;
  return {
    name: "Segment's analytics-next",
    get userId() {
      const id = analytics.user().id();
      return id == null ? undefined : Number(id);
    },
    get anonymousId() {
      return analytics.user().anonymousId();
    },
    async logEvent(product, type) {
      const [event, properties] = specCall(product, type);
      failed(await analytics.track(event, properties));
    },
    async identify(user) {
      failed(await analytics.identify(String(user)));
    },
    reset() {
      analytics.reset();
    },
  };
}
