export const EVENT_TYPES = ['view', 'click', 'add_to_cart', 'purchase', 'rate'];
